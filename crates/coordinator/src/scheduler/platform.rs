//! Which workers may run a step of a given platform: natively, or through
//! QEMU user-mode emulation on a worker that offers it
//! (`Register.emulated_platforms`, advertised only by workers started with
//! emulation allowed). A step goes to a native worker whenever one that
//! could take it is connected (it may have to wait for a free slot there:
//! emulation is many times slower); only when none is connected does it
//! fall back to an emulating worker.

use crate::model::WorkerInfo;

/// How a worker would run a step's platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fit {
    Native,
    Emulated,
}

/// How `w` runs `platform` (empty: any platform, natively), or `None`.
pub(crate) fn fit(platform: &str, w: &WorkerInfo) -> Option<Fit> {
    if platform.is_empty() || platform == w.platform {
        Some(Fit::Native)
    } else if w.emulated_platforms.iter().any(|p| p == platform) {
        Some(Fit::Emulated)
    } else {
        None
    }
}

/// The fit a step must have given the candidate workers (those serving
/// its tenant, not draining, with its labels, busy or not): `Native` when
/// any of them runs the platform natively, else `Emulated`.
pub(crate) fn required_fit<'a>(platform: &str, candidates: impl IntoIterator<Item = &'a WorkerInfo>) -> Fit {
    if candidates.into_iter().any(|w| fit(platform, w) == Some(Fit::Native)) { Fit::Native } else { Fit::Emulated }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(native: &str, emulated: &[&str]) -> WorkerInfo {
        WorkerInfo { platform: native.into(), emulated_platforms: emulated.iter().map(|p| p.to_string()).collect(), ..Default::default() }
    }

    #[test]
    fn a_step_fits_its_native_workers_and_those_emulating_its_platform() {
        let amd = worker("linux/amd64", &["linux/arm64"]);
        assert_eq!(fit("linux/amd64", &amd), Some(Fit::Native));
        assert_eq!(fit("linux/arm64", &amd), Some(Fit::Emulated));
        assert_eq!(fit("linux/riscv64", &amd), None);
        assert_eq!(fit("", &amd), Some(Fit::Native));
    }

    #[test]
    fn emulation_is_the_fallback_only_when_no_native_worker_is_connected() {
        let amd = worker("linux/amd64", &["linux/arm64"]);
        let arm = worker("linux/arm64", &[]);
        assert_eq!(required_fit("linux/arm64", [&amd, &arm]), Fit::Native);
        assert_eq!(required_fit("linux/arm64", [&amd]), Fit::Emulated);
    }
}
