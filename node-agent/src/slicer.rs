//! Slice planning: which aligned slices serve a client byte range.
//!
//! Slice `k` of an object covers `[k*S, (k+1)*S)`, clamped to the object's
//! size. The origin only ever sees these aligned ranges, whatever the client
//! asked for, so every client range maps onto the same cacheable pieces.

use crate::range::ByteRange;

/// One aligned slice and the part of it the client wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slice {
    /// First byte of the slice in the object (a multiple of the slice size).
    pub offset: u64,
    /// Length of the slice; shorter than the slice size only at the end.
    pub len: u64,
    /// Bytes of the slice the client wants, relative to `offset`, half-open.
    pub want: (u64, u64),
}

impl Slice {
    pub fn end(&self) -> u64 {
        self.offset + self.len
    }

    /// The inclusive origin range for this slice.
    pub fn as_range(&self) -> ByteRange {
        ByteRange {
            first: self.offset,
            last: self.end() - 1,
        }
    }
}

/// The slices that serve `range` of an object of `object_len` bytes.
#[derive(Clone, Debug)]
pub struct SlicePlan {
    slice_size: u64,
    object_len: u64,
    range: ByteRange,
    next: u64,
}

impl SlicePlan {
    /// Plans `range` (already resolved against `object_len`) with slices of
    /// `slice_size` bytes. A zero slice size is treated as one slice for the
    /// whole object.
    pub fn new(range: ByteRange, object_len: u64, slice_size: u64) -> Self {
        let slice_size = if slice_size == 0 { object_len.max(1) } else { slice_size };
        Self {
            slice_size,
            object_len,
            range,
            next: range.first / slice_size,
        }
    }

    /// Index of the slice containing byte `pos`.
    pub fn slice_index(pos: u64, slice_size: u64) -> u64 {
        pos / slice_size
    }
}

impl Iterator for SlicePlan {
    type Item = Slice;

    fn next(&mut self) -> Option<Slice> {
        let offset = self.next.checked_mul(self.slice_size)?;
        if offset > self.range.last || offset >= self.object_len {
            return None;
        }
        self.next += 1;
        let end = offset.saturating_add(self.slice_size).min(self.object_len);
        let want_from = self.range.first.max(offset) - offset;
        let want_to = (self.range.last + 1).min(end) - offset;
        Some(Slice {
            offset,
            len: end - offset,
            want: (want_from, want_to),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn plans_aligned_slices_clamped_to_the_object() {
        let plan: Vec<_> = SlicePlan::new(ByteRange { first: 5, last: 25 }, 22, 10).collect();
        assert_eq!(
            plan,
            vec![
                Slice {
                    offset: 0,
                    len: 10,
                    want: (5, 10)
                },
                Slice {
                    offset: 10,
                    len: 10,
                    want: (0, 10)
                },
                Slice {
                    offset: 20,
                    len: 2,
                    want: (0, 2)
                },
            ]
        );
    }

    proptest! {
        #[test]
        fn slices_tile_exactly_the_requested_range(
            len in 1u64..10_000,
            a in 0u64..10_000,
            b in 0u64..10_000,
            shift in 0u32..8,
        ) {
            let size = 16u64 << shift;
            let (first, last) = (a.min(b) % len, (a.max(b) % len).max(a.min(b) % len));
            let range = ByteRange { first, last };
            let mut pos = first;
            for s in SlicePlan::new(range, len, size) {
                prop_assert_eq!(s.offset % size, 0);
                prop_assert!(s.len <= size && s.end() <= len);
                prop_assert!(s.len == size || s.end() == len);
                prop_assert_eq!(s.offset + s.want.0, pos);
                prop_assert!(s.want.0 < s.want.1 && s.want.1 <= s.len);
                pos = s.offset + s.want.1;
            }
            prop_assert_eq!(pos, last + 1);
        }
    }
}
