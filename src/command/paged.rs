//! Replies too large to build whole (XRANGE, XREAD and FLAG.HISTORY without
//! COUNT): their items are read from storage a page at a time, off the
//! runtime thread, and each page is written before the next is read, so a
//! reply of any size holds about one page in memory. The count is exact and
//! fixed before the first item (RESP needs it up front); nothing is ever cut
//! short silently: if storage loses items while a reply is under way (a
//! compaction), the connection closes instead.

use std::collections::VecDeque;

use bytes::BytesMut;

use crate::protocol::reply::{encode_array_header, encode_map_header};
use crate::protocol::{Protocol, Reply};

/// Most items read in one page.
pub const PAGE_ITEMS: usize = 256;
/// A page stops growing once its items hold this many bytes.
pub const PAGE_BYTES: usize = 256 * 1024;

/// Where the items of a paged array come from. Its methods do storage I/O,
/// so the connection calls them on a blocking thread.
pub trait PageSource: Send + 'static {
    /// How many items the array holds; called once, before any page.
    fn total(&mut self) -> Result<usize, String>;
    /// The next items (at most about one page); empty once none are left.
    fn next_page(&mut self) -> Result<Vec<Reply>, String>;
}

/// One piece of a paged reply.
pub enum Part {
    /// A complete reply.
    Whole(Reply),
    /// The header of an array whose `n` items are the parts that follow.
    ArrayHeader(usize),
    /// The header of a map whose `n` pairs are the parts that follow.
    MapHeader(usize),
    /// An array whose items come from a source, page by page.
    Items(Box<dyn PageSource>),
}

impl std::fmt::Debug for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Part::Whole(r) => f.debug_tuple("Whole").field(r).finish(),
            Part::ArrayHeader(n) => f.debug_tuple("ArrayHeader").field(n).finish(),
            Part::MapHeader(n) => f.debug_tuple("MapHeader").field(n).finish(),
            Part::Items(_) => f.write_str("Items(..)"),
        }
    }
}

/// A reply written in parts, in order.
#[derive(Debug, Default)]
pub struct Paged {
    /// The parts not yet written.
    pub parts: VecDeque<Part>,
}

impl Paged {
    /// A reply that is one array of items from `source`.
    pub fn array(source: impl PageSource) -> Paged {
        Paged {
            parts: VecDeque::from([Part::Items(Box::new(source))]),
        }
    }

    /// Appends the parts of `other`.
    pub fn extend(&mut self, other: Paged) {
        self.parts.extend(other.parts);
    }
}

/// A command's reply: built whole, or written page by page.
#[derive(Debug)]
pub enum Output {
    /// A reply built whole.
    Reply(Reply),
    /// A reply written page by page.
    Paged(Paged),
}

impl From<Reply> for Output {
    fn from(r: Reply) -> Self {
        Output::Reply(r)
    }
}

impl Output {
    /// The parts of this output, in order.
    pub fn into_paged(self) -> Paged {
        match self {
            Output::Reply(r) => Paged {
                parts: VecDeque::from([Part::Whole(r)]),
            },
            Output::Paged(p) => p,
        }
    }
}

/// Encodes the header parts (`ArrayHeader`, `MapHeader`) and whole replies.
pub fn encode_part(part: &Part, proto: Protocol, out: &mut BytesMut) {
    match part {
        Part::Whole(r) => r.encode(proto, out),
        Part::ArrayHeader(n) => encode_array_header(*n, out),
        Part::MapHeader(n) => encode_map_header(*n, proto, out),
        Part::Items(_) => {}
    }
}

impl Paged {
    /// Reads the whole reply into one value, at most `max_items` items from
    /// its sources (more is an error). It does storage I/O: call it on a
    /// blocking thread. For callers that need a value, not bytes (the HTTP API).
    pub fn collect(mut self, max_items: usize) -> Result<Reply, String> {
        let mut budget = max_items;
        collect_part(&mut self.parts, &mut budget)
    }
}

fn collect_part(parts: &mut VecDeque<Part>, budget: &mut usize) -> Result<Reply, String> {
    match parts.pop_front() {
        None => Err("a paged reply ended early".into()),
        Some(Part::Whole(r)) => Ok(r),
        Some(Part::ArrayHeader(n)) => (0..n)
            .map(|_| collect_part(parts, budget))
            .collect::<Result<Vec<_>, _>>()
            .map(Reply::Array),
        Some(Part::MapHeader(n)) => (0..n)
            .map(|_| Ok((collect_part(parts, budget)?, collect_part(parts, budget)?)))
            .collect::<Result<Vec<_>, String>>()
            .map(Reply::Map),
        Some(Part::Items(mut source)) => {
            let total = source.total()?;
            if total > *budget {
                return Err(format!(
                    "the reply holds {total} items, more than {budget}; ask for fewer"
                ));
            }
            *budget -= total;
            let mut items = Vec::with_capacity(total);
            loop {
                let page = source.next_page()?;
                if page.is_empty() {
                    break;
                }
                items.extend(page);
            }
            Ok(Reply::Array(items))
        }
    }
}
