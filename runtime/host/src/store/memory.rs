//! The in-process store: a sharded map behind mutexes. Each operation takes one shard's lock, so
//! it is atomic, and concurrent streams on other keys rarely wait for each other. Expired keys
//! are removed when touched, and a shard is swept of them every 1,024 writes, so the keys of
//! tenants that went away do not pile up.

use super::{Backend, Entry, StoreError};
use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const SHARDS: usize = 16;
const SWEEP_EVERY: u32 = 1024;

/// Counters and values in this process's memory.
pub struct MemoryStore {
    shards: [Mutex<Shard>; SHARDS],
}

#[derive(Default)]
struct Shard {
    slots: HashMap<String, Slot>,
    writes: u32,
}

struct Slot {
    value: String,
    expires: Option<Instant>,
}

impl Slot {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|at| at > now)
    }

    fn expires_in(&self, now: Instant) -> u32 {
        // Rounded up, so a key that has not expired never reads as "never expires" (0).
        self.expires.map_or(0, |at| at.saturating_duration_since(now).as_millis().div_ceil(1000).max(1) as u32)
    }
}

fn expiry(now: Instant, ttl_seconds: u32) -> Option<Instant> {
    (ttl_seconds > 0).then(|| now + Duration::from_secs(ttl_seconds.into()))
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore { shards: std::array::from_fn(|_| Mutex::default()) }
    }
}

impl MemoryStore {
    fn shard(&self, key: &str) -> std::sync::MutexGuard<'_, Shard> {
        // Not a keyed hash: keys come from interceptors, and a skewed spread costs speed only.
        let mut hasher = DefaultHasher::new();
        key.hash(&mut hasher);
        let shard = &self.shards[hasher.finish() as usize % SHARDS];
        // A panic while holding the lock leaves the map consistent (every write is one insert).
        shard.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Shard {
    fn live(&mut self, key: &str, now: Instant) -> Option<&mut Slot> {
        if self.slots.get(key).is_some_and(|slot| !slot.live(now)) {
            self.slots.remove(key);
        }
        self.slots.get_mut(key)
    }

    fn wrote(&mut self, now: Instant) {
        self.writes += 1;
        if self.writes >= SWEEP_EVERY {
            self.writes = 0;
            self.slots.retain(|_, slot| slot.live(now));
        }
    }
}

impl Backend for MemoryStore {
    fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        let now = Instant::now();
        let mut shard = self.shard(key);
        Ok(shard.live(key, now).map(|slot| Entry { value: slot.value.clone(), expires_in: slot.expires_in(now) }))
    }

    fn increment(&self, key: &str, by: i64, ttl_seconds: u32) -> Result<i64, StoreError> {
        let now = Instant::now();
        let mut shard = self.shard(key);
        let value = match shard.live(key, now) {
            Some(slot) => {
                let value = slot.value.parse::<i64>().map_err(|_| StoreError::NotACounter)?.saturating_add(by);
                slot.value = value.to_string();
                value
            }
            None => {
                shard.slots.insert(key.to_string(), Slot { value: by.to_string(), expires: expiry(now, ttl_seconds) });
                by
            }
        };
        shard.wrote(now);
        Ok(value)
    }

    fn compare_and_set(
        &self,
        key: &str,
        expected: Option<&str>,
        value: &str,
        ttl_seconds: u32,
    ) -> Result<bool, StoreError> {
        let now = Instant::now();
        let mut shard = self.shard(key);
        if shard.live(key, now).map(|slot| slot.value.as_str()) != expected {
            return Ok(false);
        }
        shard.slots.insert(key.to_string(), Slot { value: value.to_string(), expires: expiry(now, ttl_seconds) });
        shard.wrote(now);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn increments_are_exact_under_concurrency() {
        let store = Arc::new(MemoryStore::default());
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let store = store.clone();
                std::thread::spawn(move || {
                    for i in 0..2_000 {
                        store.increment("budget", 1 + (i + t) % 3, 60).unwrap();
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        let expected: i64 = (0..8).map(|t| (0..2_000).map(|i| 1 + (i + t) % 3).sum::<i64>()).sum();
        let entry = store.get("budget").unwrap().unwrap();
        assert_eq!(entry.value, expected.to_string());
        assert!((59..=60).contains(&entry.expires_in), "the first increment set the window: {}", entry.expires_in);
    }

    #[test]
    fn compare_and_set_admits_one_writer_of_many() {
        let store = Arc::new(MemoryStore::default());
        let winners: usize = (0..8)
            .map(|t| {
                let store = store.clone();
                std::thread::spawn(move || usize::from(store.compare_and_set("lock", None, &t.to_string(), 0).unwrap()))
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .sum();
        assert_eq!(winners, 1);
        let holder = store.get("lock").unwrap().unwrap().value;
        assert!(store.compare_and_set("lock", Some(&holder), "next", 0).unwrap());
        assert!(!store.compare_and_set("lock", Some(&holder), "again", 0).unwrap(), "the value moved on");
        assert_eq!(store.get("lock").unwrap().unwrap(), Entry { value: "next".into(), expires_in: 0 });
    }

    #[test]
    fn non_counters_and_expired_keys() {
        let store = MemoryStore::default();
        store.compare_and_set("name", None, "alice", 0).unwrap();
        assert_eq!(store.increment("name", 1, 0), Err(StoreError::NotACounter));
        assert_eq!(store.increment("n", -5, 0), Ok(-5));
        // An expired key reads as absent, and an increment starts it again with a new window.
        let mut shard = store.shard("old");
        shard.slots.insert("old".into(), Slot { value: "41".into(), expires: Some(Instant::now()) });
        drop(shard);
        assert_eq!(store.get("old").unwrap(), None);
        assert_eq!(store.increment("old", 1, 10), Ok(1));
    }
}
