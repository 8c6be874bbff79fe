//! Checks the PNG `external-sample` wrote: it decodes, has the expected size, and is not one
//! constant colour (a black or blank image means sampling went wrong).
//!
//! `external-check-png FILE WIDTH HEIGHT`; exits 1 with the reason when a check fails.

use std::process::ExitCode;

fn check(args: &[String]) -> Result<String, String> {
    let [path, width, height] = args else {
        return Err("usage: external-check-png FILE WIDTH HEIGHT".to_owned());
    };
    let size = |name: &str, text: &str| {
        text.parse::<u32>()
            .map_err(|_| format!("{name}: expected a pixel count, got {text:?}"))
    };
    let (want_w, want_h) = (size("WIDTH", width)?, size("HEIGHT", height)?);
    let image = image::open(path)
        .map_err(|e| format!("{path}: cannot decode as PNG: {e}"))?
        .to_rgba8();
    if image.dimensions() != (want_w, want_h) {
        return Err(format!(
            "{path}: {}x{} pixels, expected {want_w}x{want_h}",
            image.width(),
            image.height()
        ));
    }
    let values: Vec<u8> = image.pixels().flat_map(|p| [p[0], p[1], p[2]]).collect();
    let (min, max) = values
        .iter()
        .fold((u8::MAX, u8::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    if min == max {
        return Err(format!("{path}: every pixel is {min}: not a sample"));
    }
    let mean = values.iter().map(|&v| f64::from(v)).sum::<f64>() / values.len() as f64;
    Ok(format!(
        "{path}: {want_w}x{want_h}, values {min}..={max}, mean {mean:.1}"
    ))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match check(&args) {
        Ok(summary) => {
            println!("ok: {summary}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("external-check-png: {message}");
            ExitCode::FAILURE
        }
    }
}
