//! Fault drills: what an operator injects into an agent to see how the
//! mesh copes (`pinwheel run --fault "STTService#1:slow=10x"`,
//! `pinwheel fault STTService#1 --slow 10x --for 30s`).
//!
//! A [`FaultSpec`] says how a request is served while the drill lasts:
//!
//! * `slow=Nx`: the service time is N times longer (1 to 1000, to a
//!   thousandth).
//! * `error=P`: each request fails with chance P (0 to 1, to a
//!   millionth).
//! * `stall`: no request is answered; each waits out its deadline.
//!
//! The daemon applies it to synthetic agents itself; an agent process
//! applies it through its SDK, with [`FaultSpec::service_ns`] and
//! [`FaultSpec::fails`], so both sides mean the same thing: a slowed
//! reply waits [`FaultSpec::extra_ns`] past the agent's own handling, and
//! a failed one is answered [`STATUS_DRILL_ERROR`], the status a synthetic
//! agent's injected error gets. The daemon hands the drill to an agent
//! process over its link (`link::LinkMessage::Drill`). It lives here,
//! below both, and packs into one `u64` ([`FaultSpec::to_bits`]), so the
//! daemon keeps one atomic word per agent that executors read per request
//! without a lock, and a word another process sends is checked
//! ([`FaultSpec::from_bits`]) before it is believed.
//!
//! ```text
//!  bits  0..32  slow, thousandths (1000 = no slow-down; 0 = no drill)
//!       32..52  error chance, millionths
//!       52      stall
//!       53..64  zero
//! ```

use core::fmt;

/// Largest slow-down factor.
pub const MAX_SLOW: f64 = 1000.0;

/// The reply status of a request a drill fails: the daemon's "handler
/// failed" (500), as a synthetic agent's injected error is answered.
pub const STATUS_DRILL_ERROR: u16 = 500;

/// Thousandths of a slow-down factor of 1.
const ONE_X: u32 = 1000;
/// A million: the error chance's denominator.
const MILLION: u32 = 1_000_000;
const STALL_BIT: u64 = 1 << 52;

/// How an agent serves requests during a drill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FaultSpec {
    slow_milli: u32,
    error_ppm: u32,
    stall: bool,
}

impl Default for FaultSpec {
    fn default() -> Self {
        Self::NONE
    }
}

/// A drill that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DrillError {
    /// Nothing was given.
    #[error("an empty fault; give slow=10x, error=0.2 or stall (comma-separated)")]
    Empty,
    /// A key that is not one of slow, error, stall.
    #[error("unknown fault {key:?}; use slow=10x, error=0.2 or stall")]
    UnknownKey {
        /// What was given.
        key: String,
    },
    /// A value out of range or not a number.
    #[error("fault {key}={value:?}: {expected}")]
    BadValue {
        /// The key.
        key: &'static str,
        /// What was given.
        value: String,
        /// What is allowed.
        expected: &'static str,
    },
}

impl FaultSpec {
    /// No drill: requests are served as usual.
    pub const NONE: FaultSpec = FaultSpec {
        slow_milli: ONE_X,
        error_ppm: 0,
        stall: false,
    };

    /// A drill that slows service `factor` times (clamped to 1..=1000).
    pub fn slow(factor: f64) -> Self {
        Self {
            slow_milli: (factor.clamp(1.0, MAX_SLOW) * f64::from(ONE_X)).round() as u32,
            ..Self::NONE
        }
    }

    /// This drill with requests failing with `chance` (clamped to 0..=1).
    pub fn with_error(self, chance: f64) -> Self {
        Self {
            error_ppm: (chance.clamp(0.0, 1.0) * f64::from(MILLION)).round() as u32,
            ..self
        }
    }

    /// This drill with every request stalled.
    pub fn with_stall(self) -> Self {
        Self {
            stall: true,
            ..self
        }
    }

    /// Whether this is no drill at all.
    pub fn is_none(self) -> bool {
        self == Self::NONE
    }

    /// The slow-down factor (1.0: none).
    pub fn slow_factor(self) -> f64 {
        f64::from(self.slow_milli) / f64::from(ONE_X)
    }

    /// The chance a request fails.
    pub fn error_chance(self) -> f64 {
        f64::from(self.error_ppm) / f64::from(MILLION)
    }

    /// Whether requests stall.
    pub fn stalls(self) -> bool {
        self.stall
    }

    /// A service time of `ns` under this drill.
    pub fn service_ns(self, ns: u64) -> u64 {
        let scaled = u128::from(ns) * u128::from(self.slow_milli) / u128::from(ONE_X);
        u64::try_from(scaled).unwrap_or(u64::MAX)
    }

    /// How much longer than `ns` a service of `ns` takes under this drill
    /// (what a slowed reply waits once its handler is done).
    pub fn extra_ns(self, ns: u64) -> u64 {
        self.service_ns(ns).saturating_sub(ns)
    }

    /// Whether a request fails, given `draw`, a uniformly random `u32`.
    pub fn fails(self, draw: u32) -> bool {
        // draw / 2^32 < error_ppm / 10^6, in integers.
        u64::from(draw) * u64::from(MILLION) < u64::from(self.error_ppm) << 32
    }

    /// The drill as one word (see the module docs).
    pub fn to_bits(self) -> u64 {
        u64::from(self.slow_milli)
            | u64::from(self.error_ppm) << 32
            | if self.stall { STALL_BIT } else { 0 }
    }

    /// A drill from a word; `None` when the word is not one `to_bits`
    /// makes (zero means no drill).
    pub fn from_bits(bits: u64) -> Option<Self> {
        if bits == 0 {
            return Some(Self::NONE);
        }
        let slow_milli = (bits & 0xffff_ffff) as u32;
        let error_ppm = ((bits >> 32) & 0xf_ffff) as u32;
        let valid = bits >> 53 == 0
            && (ONE_X..=(MAX_SLOW as u32) * ONE_X).contains(&slow_milli)
            && error_ppm <= MILLION;
        valid.then_some(Self {
            slow_milli,
            error_ppm,
            stall: bits & STALL_BIT != 0,
        })
    }

    /// Parses `slow=10x,error=0.2,stall` (any of them, any order).
    pub fn parse(text: &str) -> Result<Self, DrillError> {
        let mut spec = Self::NONE;
        let mut any = false;
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            any = true;
            let (key, value) = part.split_once('=').unwrap_or((part, ""));
            spec = match key.trim() {
                "slow" => {
                    let number = value.trim().trim_end_matches(['x', 'X']);
                    match number.parse::<f64>() {
                        Ok(f) if (1.0..=MAX_SLOW).contains(&f) => Self {
                            slow_milli: Self::slow(f).slow_milli,
                            ..spec
                        },
                        _ => return Err(bad("slow", value, "a factor from 1x to 1000x")),
                    }
                }
                "error" => match value.trim().parse::<f64>() {
                    Ok(p) if (0.0..=1.0).contains(&p) => spec.with_error(p),
                    _ => return Err(bad("error", value, "a chance from 0 to 1")),
                },
                "stall" if value.is_empty() => spec.with_stall(),
                "stall" => return Err(bad("stall", value, "no value: write just `stall`")),
                other => {
                    return Err(DrillError::UnknownKey {
                        key: other.to_owned(),
                    });
                }
            };
        }
        if any {
            Ok(spec)
        } else {
            Err(DrillError::Empty)
        }
    }
}

fn bad(key: &'static str, value: &str, expected: &'static str) -> DrillError {
    DrillError::BadValue {
        key,
        value: value.to_owned(),
        expected,
    }
}

impl fmt::Display for FaultSpec {
    /// `slow=10x,error=0.2,stall` (the parts in force), or `none`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_none() {
            return f.write_str("none");
        }
        let mut sep = "";
        if self.slow_milli != ONE_X {
            write!(f, "slow={}x", self.slow_factor())?;
            sep = ",";
        }
        if self.error_ppm > 0 {
            write!(f, "{sep}error={}", self.error_chance())?;
            sep = ",";
        }
        if self.stall {
            write!(f, "{sep}stall")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_drill_parses_prints_and_packs_into_one_word() {
        let sut = FaultSpec::parse("slow=10x, error=0.2,stall").unwrap();
        assert_eq!(sut.slow_factor(), 10.0);
        assert_eq!(sut.error_chance(), 0.2);
        assert!(sut.stalls());
        assert_eq!(sut.to_string(), "slow=10x,error=0.2,stall");
        assert_eq!(FaultSpec::from_bits(sut.to_bits()), Some(sut));
        assert_eq!(FaultSpec::parse(&sut.to_string()), Ok(sut));
        assert_eq!(FaultSpec::NONE.to_string(), "none");
        assert_eq!(FaultSpec::from_bits(0), Some(FaultSpec::NONE));
    }

    #[test]
    fn bad_drills_say_what_to_write() {
        assert_eq!(FaultSpec::parse(" , "), Err(DrillError::Empty));
        let err = FaultSpec::parse("slow=0.5x").unwrap_err();
        assert!(err.to_string().contains("1x to 1000x"), "{err}");
        assert!(FaultSpec::parse("error=2").is_err());
        assert!(FaultSpec::parse("stall=yes").is_err());
        assert!(matches!(
            FaultSpec::parse("crash"),
            Err(DrillError::UnknownKey { .. })
        ));
    }

    #[test]
    fn a_slow_drill_scales_service_time_and_errors_fail_their_share() {
        let sut = FaultSpec::slow(10.0).with_error(0.25);
        assert_eq!(sut.service_ns(400_000), 4_000_000);
        assert_eq!(FaultSpec::NONE.service_ns(400_000), 400_000);
        assert_eq!(sut.extra_ns(400_000), 3_600_000);
        assert_eq!(FaultSpec::NONE.extra_ns(400_000), 0);
        assert_eq!(FaultSpec::slow(1000.0).extra_ns(u64::MAX), 0);
        let failed = (0..1000u32)
            .filter(|i| sut.fails(i.wrapping_mul(4_294_967)))
            .count();
        assert!((240..=260).contains(&failed), "{failed}");
        assert!(!FaultSpec::NONE.fails(0));
        assert!(FaultSpec::NONE.with_error(1.0).fails(u32::MAX));
    }

    proptest! {
        #[test]
        fn any_word_decodes_to_a_valid_drill_or_none(bits in any::<u64>()) {
            if let Some(spec) = FaultSpec::from_bits(bits) {
                prop_assert!((1.0..=MAX_SLOW).contains(&spec.slow_factor()));
                prop_assert!((0.0..=1.0).contains(&spec.error_chance()));
                prop_assert_eq!(FaultSpec::from_bits(spec.to_bits()), Some(spec));
            }
        }
    }
}
