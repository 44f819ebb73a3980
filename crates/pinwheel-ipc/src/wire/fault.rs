//! Why rkyv rejected a frame, kept without allocating.
//!
//! rkyv reports errors through a user-chosen type implementing
//! [`rkyv::rancor::Source`]. `rancor::Error` boxes the cause (an allocation on
//! every rejected frame, which a hostile peer controls); `rancor::Failure`
//! keeps nothing, which leaves an operator guessing. [`Fault`] is the middle
//! way: it renders the innermost cause, then the context rkyv adds as the
//! error travels outwards, into a fixed inline buffer ([`Reason`]) and
//! truncates what does not fit. Building one costs a little formatting on
//! the error path only; the success path never touches it.

use core::fmt;

use rkyv::rancor::{Source, Trace};

/// Bytes of text a [`Reason`] keeps; the rest is cut.
pub const REASON_BYTES: usize = 87;

/// The text of a codec error, truncated to [`REASON_BYTES`] on a character
/// boundary. `Copy` and inline, so errors never allocate.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Reason {
    text: [u8; REASON_BYTES],
    len: u8,
}

impl Reason {
    /// An empty reason.
    pub const fn empty() -> Self {
        Reason {
            text: [0; REASON_BYTES],
            len: 0,
        }
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        let kept = &self.text[..usize::from(self.len)];
        // Pushes only ever copy whole characters, so this never fails; an
        // empty string is the harmless answer if that ever changes.
        core::str::from_utf8(kept).unwrap_or_default()
    }

    /// Appends as much of `text` as fits, cutting on a character boundary.
    fn push(&mut self, text: &str) {
        let start = usize::from(self.len);
        let room = REASON_BYTES - start;
        let mut take = text.len().min(room);
        while !text.is_char_boundary(take) {
            take -= 1;
        }
        self.text[start..start + take].copy_from_slice(&text.as_bytes()[..take]);
        // `start + take <= REASON_BYTES`, which fits in a u8.
        self.len = u8::try_from(start + take).unwrap_or(u8::MAX);
    }

    /// Appends `value`'s Display text, as much as fits.
    fn push_display(&mut self, value: &dyn fmt::Display) {
        // `Reason`'s `fmt::Write` never fails; it truncates instead.
        let _ = fmt::write(self, format_args!("{value}"));
    }
}

impl fmt::Write for Reason {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.push(s);
        Ok(())
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// The rkyv error type the codec runs with: a [`Reason`] being built.
#[derive(Debug)]
pub(super) struct Fault(Reason);

impl Fault {
    /// What went wrong.
    pub(super) fn reason(&self) -> Reason {
        self.0
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl core::error::Error for Fault {}

impl Trace for Fault {
    fn trace<R>(mut self, trace: R) -> Self
    where
        R: fmt::Debug + fmt::Display + Send + Sync + 'static,
    {
        self.0.push("; ");
        self.0.push_display(&trace);
        self
    }
}

impl Source for Fault {
    fn new<T: core::error::Error + Send + Sync + 'static>(source: T) -> Self {
        let mut reason = Reason::empty();
        reason.push_display(&source);
        Fault(reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_reason_is_kept_whole() {
        let mut sut = Reason::empty();
        sut.push("invalid tag 9");
        assert_eq!(sut.as_str(), "invalid tag 9");
    }

    #[test]
    fn a_long_reason_is_cut_at_the_buffer_size() {
        let mut sut = Reason::empty();
        sut.push(&"x".repeat(200));
        sut.push("more");
        assert_eq!(sut.as_str().len(), REASON_BYTES);
    }

    #[test]
    fn a_cut_never_splits_a_character() {
        let mut sut = Reason::empty();
        sut.push(&"x".repeat(REASON_BYTES - 1));
        sut.push("é");
        assert_eq!(sut.as_str().len(), REASON_BYTES - 1);
    }

    #[test]
    fn a_fault_keeps_the_cause_then_its_context() {
        let sut = Fault::new(std::fmt::Error).trace("in field payload");
        assert_eq!(
            sut.reason().as_str(),
            "an error occurred when formatting an argument; in field payload"
        );
    }
}
