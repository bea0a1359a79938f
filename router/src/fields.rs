//! Header fields of a parsed HTTP/1 head, turned into a [`HeaderMap`] whose values share the
//! head's memory. Both the front end (request heads) and the dedicated upstream connection
//! (response heads) parse with `httparse`, which borrows the read buffer; the fields'
//! positions are kept while it does, and the map is built once the head is frozen.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};

/// The first fields' spans live on the stack (a message rarely has more), the rest in a
/// `Vec` that stays empty (no allocation) otherwise.
const INLINE: usize = 16;

/// Where a field's name and value are in the head: (name at, name length, value at, value
/// length).
type Span = (usize, usize, usize, usize);

/// Where each field is in the buffer a head was parsed from.
pub(crate) struct Spans {
    base: usize,
    inline: [Span; INLINE],
    spill: Vec<Span>,
    count: usize,
}

impl Spans {
    /// Spans of fields parsed from `buf`.
    pub(crate) fn new(buf: &[u8]) -> Spans {
        Spans {
            base: buf.as_ptr() as usize,
            inline: [(0, 0, 0, 0); INLINE],
            spill: Vec::new(),
            count: 0,
        }
    }

    /// Where `s` (a slice of the buffer given to [`Spans::new`]) starts in that buffer.
    pub(crate) fn offset(&self, s: &[u8]) -> usize {
        s.as_ptr() as usize - self.base
    }

    /// Keeps the position of a field parsed from the buffer.
    pub(crate) fn push(&mut self, field: &httparse::Header<'_>) {
        let span = (
            self.offset(field.name.as_bytes()),
            field.name.len(),
            self.offset(field.value),
            field.value.len(),
        );
        match self.inline.get_mut(self.count) {
            Some(slot) => *slot = span,
            None => self.spill.push(span),
        }
        self.count += 1;
    }

    /// Each field's name and value in `head` (the buffer, frozen).
    pub(crate) fn fields<'a>(
        &'a self,
        head: &'a [u8],
    ) -> impl Iterator<Item = (&'a [u8], &'a [u8])> {
        let inline = &self.inline[..self.count.min(INLINE)];
        inline
            .iter()
            .chain(&self.spill)
            .map(move |&(n, nl, v, vl)| (&head[n..n + nl], &head[v..v + vl]))
    }

    /// The fields as a map whose values share `head` (the buffer, frozen), with room for
    /// `extra` more fields. `None` if a name or value is not valid in a [`HeaderMap`].
    pub(crate) fn to_map(&self, head: &Bytes, extra: usize) -> Option<HeaderMap> {
        let mut map = HeaderMap::with_capacity(self.count + extra);
        let inline = &self.inline[..self.count.min(INLINE)];
        for &(n, nl, v, vl) in inline.iter().chain(&self.spill) {
            let name = HeaderName::from_bytes(&head[n..n + nl]).ok()?;
            let value = HeaderValue::from_maybe_shared(head.slice(v..v + vl)).ok()?;
            map.append(name, value);
        }
        Some(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The spill past the inline spans is covered by upstream.rs's
    // `every_field_of_a_long_head_is_kept_in_order` (80 fields through `parse_head`).

    #[test]
    fn an_invalid_value_is_refused() {
        let head = Bytes::from_static(b"x: \x01\r\n");
        let mut spans = Spans::new(&head);
        spans.push(&httparse::Header {
            name: std::str::from_utf8(&head[0..1]).unwrap(),
            value: &head[3..4],
        });
        assert!(spans.to_map(&head, 0).is_none());
    }
}
