//! CPU references in f64 for every GPU op, and the comparison report the tests use. The GPU
//! kernels are validated against these before they are benchmarked (as llm.c does), and the
//! bench uses them to flag adapters that compute garbage.

pub mod attention;
pub mod conv;
pub mod misc;
pub mod rng;
pub mod text;

/// The outcome of comparing a GPU result with a reference: a failure says where to look.
#[derive(Debug, Clone)]
pub struct Comparison {
    pub name: String,
    pub len: usize,
    /// Elements where |got − want| > atol + rtol·|want| (or non-finite).
    pub bad: usize,
    pub max_abs: f64,
    /// max |got − want| / max |want| — the error relative to the tensor's scale.
    pub max_rel_to_scale: f64,
    pub first_bad: Option<(usize, f32, f64)>,
    pub worst: Option<(usize, f32, f64)>,
}

impl Comparison {
    /// Whether every element passed.
    pub fn ok(&self) -> bool {
        self.bad == 0
    }
}

impl std::fmt::Display for Comparison {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} of {} elements off; max abs err {:.3e}, max err / max|ref| {:.3e}",
            self.name, self.bad, self.len, self.max_abs, self.max_rel_to_scale
        )?;
        if let Some((i, got, want)) = self.worst {
            write!(f, "; worst at [{i}]: got {got}, want {want}")?;
        }
        if let Some((i, got, want)) = self.first_bad {
            write!(f, "; first bad at [{i}]: got {got}, want {want}")?;
        }
        Ok(())
    }
}

/// Compares `got` with `want` element by element: an element passes when
/// |got − want| ≤ atol + rtol·|want|. Length mismatches count every element as bad.
pub fn compare(name: &str, got: &[f32], want: &[f64], atol: f64, rtol: f64) -> Comparison {
    let mut c = Comparison {
        name: name.to_string(),
        len: want.len(),
        bad: 0,
        max_abs: 0.0,
        max_rel_to_scale: 0.0,
        first_bad: None,
        worst: None,
    };
    if got.len() != want.len() {
        c.bad = want.len().max(got.len());
        c.name = format!("{name} (length {} vs reference {})", got.len(), want.len());
        return c;
    }
    let scale = want.iter().fold(0.0f64, |m, w| m.max(w.abs()));
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (f64::from(g) - w).abs();
        let bad = !err.is_finite() || err > atol + rtol * w.abs();
        if bad {
            c.bad += 1;
            c.first_bad.get_or_insert((i, g, w));
        }
        if !err.is_finite() || err > c.max_abs {
            c.max_abs = if err.is_finite() { err } else { f64::INFINITY };
            c.worst = Some((i, g, w));
        }
    }
    c.max_rel_to_scale = if scale > 0.0 {
        c.max_abs / scale
    } else {
        c.max_abs
    };
    c
}

/// Like [`compare`] but the tolerance is relative to the tensor's scale: passes when
/// max |got − want| ≤ tol · max |want|. This is the "max rel. error" of the parity tests.
pub fn compare_scaled(name: &str, got: &[f32], want: &[f64], tol: f64) -> Comparison {
    let scale = want
        .iter()
        .fold(0.0f64, |m, w| m.max(w.abs()))
        .max(f64::MIN_POSITIVE);
    compare(name, got, want, tol * scale, 0.0)
}
