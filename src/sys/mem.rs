//! Stores the compiler must not remove: wiping a secret just before its
//! memory is freed is a dead store to an optimiser, so it needs a volatile
//! write, which is `unsafe`.

use std::sync::atomic::{compiler_fence, Ordering};

/// Replaces `*place` with `value` by a volatile store, for secrets held in
/// types that cannot be zeroed in place (ring's `LessSafeKey` has no
/// `Zeroize` and no `Drop`). The old value is overwritten, not dropped, so
/// `T` must be a type without drop glue (checked when compiling).
pub fn overwrite<T>(place: &mut T, value: T) {
    const { assert!(!std::mem::needs_drop::<T>()) };
    // SAFETY: `place` is a live, aligned, exclusive reference to a T. The old
    // value has no drop glue, so not dropping it leaks nothing.
    unsafe { std::ptr::write_volatile(place, value) };
    // As zeroize does: keep later code from being moved before the store.
    compiler_fence(Ordering::SeqCst);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overwrite_replaces_the_value() {
        let mut secret = [0xa5u8; 32];
        overwrite(&mut secret, [0; 32]);
        assert_eq!(secret, [0; 32]);
    }
}
