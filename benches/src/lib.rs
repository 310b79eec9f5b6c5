//! Inputs shared by the benchmarks.

use sluicegate::batch::Batch;

pub use sluicegate::bench::sample_events as events;

/// `n` events of about `size` bytes of data as one batch.
pub fn batch(n: usize, size: usize) -> Batch {
    events(n, size).into_iter().collect()
}

/// A realistic answer, as an OpenAI Chat Completions stream sends it: one chunk per token
/// (split before spaces and around punctuation, at most six characters), each with the fields a
/// real chunk carries. No `finish_reason` or `[DONE]`, so the chunks can be fed round and round
/// as one endless stream.
pub fn chat_token_chunks() -> Vec<sluicegate::sse::Event> {
    token_chunks(
        "Thanks for reaching out! You can contact our support team at support@example.com, \
         or write to jane.doe@corp.example.org for billing questions. Our office hours are 9am to 5pm, \
         Monday through Friday, and we usually answer within one business day. ",
    )
}

/// `answer` split into tokens, each as an OpenAI Chat Completions chunk.
pub fn token_chunks(answer: &str) -> Vec<sluicegate::sse::Event> {
    sluicegate::bench::tokens(answer)
        .iter()
        .map(|t| {
            sluicegate::sse::Event::message(format!(
                "{{\"id\":\"chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT\",\"object\":\"chat.completion.chunk\",\
                 \"created\":1741569952,\"model\":\"gpt-4.1-2025-04-14\",\"service_tier\":\"default\",\
                 \"system_fingerprint\":\"fp_b376dfbbd5\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{t}\"}},\
                 \"logprobs\":null,\"finish_reason\":null}}]}}"
            ))
        })
        .collect()
}

/// The delta text of a chunk made by [`token_chunks`] (its tokens need no JSON escapes).
pub fn chunk_text(chunk: &sluicegate::sse::Event) -> String {
    let data = std::str::from_utf8(chunk.data.as_deref().unwrap_or_default()).unwrap_or_default();
    let start = data.find("\"content\":\"").map_or(data.len(), |i| i + 11);
    let end = data[start..].find("\"}").map_or(start, |i| start + i);
    data[start..end].to_string()
}
