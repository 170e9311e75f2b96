//! Code tables the HL7 adapter needs beyond the model registry: MDC unit codes to UCUM, and
//! vendor MDC codes that the registry does not (yet) carry.

use vigil_model::{Metric, registry};

/// IEEE 11073-10101 unit codes (partition 4, DIM: 4 × 65536 + term) to UCUM. Terms checked
/// against the reference (clinical-codes-and-rules.md §3.3) and public 11073 nomenclature
/// tables.
const MDC_UNITS: &[(u32, &str)] = &[
    (262_688, "%"),       // MDC_DIM_PERCENT (544)
    (263_424, "m"),       // MDC_DIM_X_M (1280)
    (263_441, "cm"),      // MDC_DIM_CENTI_M (1297)
    (263_520, "[in_i]"),  // MDC_DIM_INCH (1376)
    (263_744, "L"),       // MDC_DIM_X_L (1600)
    (263_872, "g"),       // MDC_DIM_X_G (1728)
    (263_875, "kg"),      // MDC_DIM_KILO_G (1731)
    (263_904, "[lb_av]"), // MDC_DIM_LB (1760)
    (264_096, "kg/m2"),   // MDC_DIM_KG_PER_M_SQ (1952)
    (264_274, "mg/dL"),   // MDC_DIM_MILLI_G_PER_DL (2130)
    (264_864, "/min"),    // MDC_DIM_BEAT_PER_MIN (2720)
    (264_928, "/min"),    // MDC_DIM_RESP_PER_MIN (2784)
    (265_216, "L/min"),   // MDC_DIM_X_L_PER_MIN (3072)
    (265_987, "kPa"),     // MDC_DIM_KILO_PASCAL (3843)
    (266_016, "mm[Hg]"),  // MDC_DIM_MMHG (3872)
    (266_560, "[degF]"),  // MDC_DIM_FAHR (4416)
    (266_866, "mmol/L"),  // MDC_DIM_MILLI_MOLE_PER_L (4722)
    (268_192, "Cel"),     // MDC_DIM_DEGC (6048)
];

/// The UCUM unit of an MDC unit code.
pub fn mdc_unit(code: u32) -> Option<&'static str> {
    MDC_UNITS.iter().find(|(c, _)| *c == code).map(|(_, u)| *u)
}

/// The metric of an MDC observation code, from the registry.
pub fn mdc_metric(code: u32) -> Option<Metric> {
    registry().by_mdc(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_codes_follow_the_partition_structure() {
        for (code, _) in MDC_UNITS {
            assert_eq!(code / 65_536, 4, "{code} is not in the DIM partition");
        }
        assert_eq!(mdc_unit(262_688), Some("%"));
        assert_eq!(mdc_unit(266_016), Some("mm[Hg]"));
        assert_eq!(mdc_unit(1), None);
    }

    #[test]
    fn observation_codes_come_from_the_registry() {
        assert_eq!(mdc_metric(188_496).map(Metric::loinc), Some("8310-5"));
        assert_eq!(mdc_metric(150_324), None);
    }
}
