//! An ordered chain of interceptors, and one stream's pass through it.

use crate::batch::Batch;
use crate::interceptor::{Fault, Interceptor, InterceptorStream};
use sluicegate_guest::{EndReason, StreamContext};
use std::fmt;
use std::sync::Arc;

/// The interceptors that a route's event streams pass through, in order.
#[derive(Clone, Default)]
pub struct Chain {
    links: Vec<Arc<dyn Interceptor>>,
}

impl Chain {
    pub fn new(links: Vec<Arc<dyn Interceptor>>) -> Self {
        Chain { links }
    }

    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
    }

    pub fn links(&self) -> &[Arc<dyn Interceptor>] {
        &self.links
    }

    /// Opens a stream on every interceptor, in order.
    pub fn open(&self, context: &StreamContext) -> Result<ChainStream, ChainFault> {
        let mut streams = Vec::with_capacity(self.links.len());
        for (link, interceptor) in self.links.iter().enumerate() {
            let stream =
                interceptor.open(context).map_err(|fault| ChainFault::new(link, interceptor.as_ref(), fault))?;
            streams.push(stream);
        }
        Ok(ChainStream { links: self.links.clone(), streams, spare: Batch::new(), ended: false })
    }
}

/// A fault of one interceptor of a chain.
#[derive(Debug, Clone)]
pub struct ChainFault {
    /// Its position in the chain.
    pub link: usize,
    /// Its name.
    pub name: String,
    pub fault: Fault,
}

impl ChainFault {
    fn new(link: usize, interceptor: &dyn Interceptor, fault: Fault) -> Self {
        ChainFault { link, name: interceptor.name().to_string(), fault }
    }
}

impl fmt::Display for ChainFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "interceptor {} ({}) {}", self.link, self.name, self.fault)
    }
}

impl std::error::Error for ChainFault {}

/// One stream's state in every interceptor of a chain.
pub struct ChainStream {
    links: Vec<Arc<dyn Interceptor>>,
    streams: Vec<Box<dyn InterceptorStream>>,
    /// The other buffer of the double-buffered pass.
    spare: Batch,
    ended: bool,
}

impl ChainStream {
    /// True once an interceptor has ended the stream.
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// Passes `batch` through every interceptor; the output replaces it. Returns true if an
    /// interceptor ended the stream (the output is still to be sent, then the stream closes).
    pub fn process(&mut self, batch: &mut Batch) -> Result<bool, ChainFault> {
        for link in 0..self.streams.len() {
            if batch.is_empty() {
                break;
            }
            self.run(link, batch)?;
        }
        Ok(self.ended)
    }

    fn run(&mut self, link: usize, batch: &mut Batch) -> Result<(), ChainFault> {
        let applied = self.streams[link]
            .process(batch, &mut self.spare)
            .map_err(|fault| ChainFault::new(link, self.links[link].as_ref(), fault))?;
        if !applied.unchanged {
            std::mem::swap(batch, &mut self.spare);
        }
        self.ended |= applied.ended;
        Ok(())
    }

    /// Ends the stream in every interceptor, in order. Events that interceptor `i` adds on
    /// finishing pass through interceptors `i+1..` before they are sent. Returns those events.
    pub fn finish(&mut self, reason: EndReason) -> Result<Batch, ChainFault> {
        let mut tail = Batch::new();
        let mut added = Batch::new();
        for link in 0..self.streams.len() {
            if !tail.is_empty() {
                self.run(link, &mut tail)?;
            }
            self.streams[link]
                .finish(reason, &mut added)
                .map_err(|fault| ChainFault::new(link, self.links[link].as_ref(), fault))?;
            tail.extend_from(added.view());
        }
        Ok(tail)
    }
}
