//! `vigil news2`: score one set of observations.

use crate::InputError;
use clap::Args;
use vigil_rules::news2::{Acvpu, Inputs, Spo2Scale, score};

#[derive(Debug, Args)]
pub struct News2Args {
    /// Respiration rate, breaths per minute.
    #[arg(long)]
    rr: Option<f64>,
    /// SpO2, percent.
    #[arg(long)]
    spo2: Option<f64>,
    /// SpO2 scale: 1, or 2 for hypercapnic respiratory failure (set by a clinician).
    #[arg(long, default_value_t = 1)]
    scale: u8,
    /// Breathing air.
    #[arg(long, conflicts_with = "oxygen")]
    air: bool,
    /// On supplemental oxygen.
    #[arg(long)]
    oxygen: bool,
    /// Systolic blood pressure, mmHg.
    #[arg(long)]
    sbp: Option<f64>,
    /// Pulse, beats per minute.
    #[arg(long)]
    pulse: Option<f64>,
    /// Consciousness: A, C, V, P or U.
    #[arg(long)]
    acvpu: Option<String>,
    /// Temperature, Celsius.
    #[arg(long)]
    temp: Option<f64>,
}

pub fn run(a: News2Args) -> anyhow::Result<()> {
    let scale = match a.scale {
        1 => Spo2Scale::Scale1,
        2 => Spo2Scale::Scale2,
        s => return Err(InputError(format!("--scale must be 1 or 2, got {s}")).into()),
    };
    let consciousness = a
        .acvpu
        .as_deref()
        .map(|s| s.parse::<Acvpu>().map_err(|e| InputError(e.to_string())))
        .transpose()?;
    let inputs = Inputs {
        respiration_rate: a.rr,
        spo2: a.spo2,
        scale,
        supplemental_oxygen: if a.oxygen {
            Some(true)
        } else if a.air {
            Some(false)
        } else {
            None
        },
        systolic_bp: a.sbp,
        pulse: a.pulse,
        consciousness,
        temperature: a.temp,
    };
    match score(&inputs) {
        Ok(n) => {
            println!("{}", serde_json::to_string_pretty(&n)?);
            Ok(())
        }
        Err(incomplete) => Err(InputError(format!(
            "incomplete NEWS2 set: {incomplete}; a partial set is not a score"
        ))
        .into()),
    }
}
