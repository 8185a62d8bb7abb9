//! Platforms by name (`linux/arm64`, `linux/arm/v7`) and the image index
//! that holds one manifest per platform.
//!
//! Names are normalised as containerd and BuildKit normalise them, so the
//! same platform always has the same name in a cache key, a worker's
//! registration and an index: `aarch64` → `arm64`, `x86_64` → `amd64`,
//! `arm64/v8` → `arm64` (v8 is the only arm64 there is), `arm` →
//! `arm/v7`.

use crate::model::{Index, media_type, to_json};
use crate::{Descriptor, ImageError, OciLayout, Platform, Result};

impl Platform {
    /// Parses and normalises `os/arch[/variant]`; `what` names the flag or
    /// field in the error (e.g. `--platform`).
    pub fn parse(spec: &str, what: &str) -> Result<Platform> {
        let bad = |reason: &str| ImageError::invalid(format!("{what} {spec:?}"), reason.to_owned());
        let parts: Vec<&str> = spec.trim().split('/').collect();
        let (os, arch, variant) = match parts.as_slice() {
            [os, arch] => (*os, *arch, None),
            [os, arch, variant] => (*os, *arch, Some(*variant)),
            _ => return Err(bad("expected os/arch or os/arch/variant (e.g. linux/arm64)")),
        };
        let ok = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-');
        if !ok(os) || !ok(arch) || variant.is_some_and(|v| !ok(v)) {
            return Err(bad("each part must be a non-empty name of letters, digits, '.', '_' or '-'"));
        }
        let os = os.to_ascii_lowercase();
        if os != "linux" {
            return Err(bad("only linux images can be built"));
        }
        let arch = match arch.to_ascii_lowercase().as_str() {
            "aarch64" => "arm64".to_owned(),
            "x86_64" | "x86-64" => "amd64".to_owned(),
            "armhf" => "arm".to_owned(),
            "i386" | "i686" => "386".to_owned(),
            a => a.to_owned(),
        };
        let variant = match (arch.as_str(), variant.map(str::to_ascii_lowercase)) {
            ("arm64", Some(v)) if v == "v8" => None,
            ("arm", None) => Some("v7".to_owned()),
            (_, v) => v,
        };
        Ok(Platform { architecture: arch, os, variant, os_version: None, os_features: vec![] })
    }

    /// The platform of an image config (`os`, `architecture`, `variant`),
    /// normalised; `None` when the config names no architecture.
    pub fn of_config(config: &crate::ImageConfig) -> Option<Platform> {
        if config.architecture.is_empty() || config.os.is_empty() {
            return None;
        }
        let spec = match &config.variant {
            Some(v) => format!("{}/{}/{v}", config.os, config.architecture),
            None => format!("{}/{}", config.os, config.architecture),
        };
        Platform::parse(&spec, "image config platform").ok()
    }

    /// A name for a directory or id (`linux_arm64`, `linux_arm_v7`), as
    /// BuildKit names the per-platform directories of a local export.
    pub fn slug(&self) -> String {
        self.to_string().replace('/', "_")
    }
}

/// Writes an OCI image index of `manifests` (each descriptor carrying its
/// platform) into `layout`, lists it in `index.json` under `ref_name`, and
/// returns its descriptor. Two manifests for one platform are refused.
pub fn save_index(layout: &OciLayout, manifests: Vec<Descriptor>, ref_name: Option<&str>) -> Result<Descriptor> {
    let mut seen = std::collections::BTreeSet::new();
    for m in &manifests {
        let p = m.platform.as_ref().ok_or_else(|| ImageError::invalid(format!("manifest {}", m.digest), "has no platform for an index"))?;
        if !seen.insert(p.to_string()) {
            return Err(ImageError::invalid(format!("manifest {}", m.digest), format!("is a second image for {p} in one index")));
        }
    }
    let mut index = Index::empty();
    index.manifests = manifests;
    let bytes = to_json(&index);
    let desc = Descriptor::for_bytes(media_type::OCI_INDEX, &bytes);
    layout.write_blob(&bytes)?;
    layout.add_manifest(desc.clone(), ref_name)?;
    Ok(desc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_names_are_normalised_as_buildkit_does() {
        let name = |s: &str| Platform::parse(s, "--platform").unwrap().to_string();
        assert_eq!(name("linux/aarch64"), "linux/arm64");
        assert_eq!(name("linux/arm64/v8"), "linux/arm64");
        assert_eq!(name("linux/x86_64"), "linux/amd64");
        assert_eq!(name("linux/arm"), "linux/arm/v7");
        assert_eq!(name("linux/arm/v6"), "linux/arm/v6");
        assert_eq!(name("Linux/AMD64"), "linux/amd64");
    }

    #[test]
    fn a_bad_platform_is_refused_naming_the_flag() {
        for bad in ["linux", "linux/", "/amd64", "linux/amd64/v1/x", "windows/amd64", "linux/am d64"] {
            let err = Platform::parse(bad, "--platform").unwrap_err().to_string();
            assert!(err.contains("--platform") && err.contains(bad), "{bad}: {err}");
        }
    }

    #[test]
    fn an_index_holds_one_manifest_per_platform() {
        let dir = tempfile::tempdir().unwrap();
        let layout = OciLayout::create(dir.path()).unwrap();
        let mut a = Descriptor::for_bytes(media_type::OCI_MANIFEST, b"a");
        a.platform = Some(Platform::parse("linux/amd64", "x").unwrap());
        let mut b = Descriptor::for_bytes(media_type::OCI_MANIFEST, b"b");
        b.platform = Some(Platform::parse("linux/arm64", "x").unwrap());
        let desc = save_index(&layout, vec![a.clone(), b.clone()], Some("x:1")).unwrap();
        assert_eq!(layout.find(Some("x:1")).unwrap().digest, desc.digest);
        let index: Index = crate::model::from_json(&layout.read_blob(&desc.digest).unwrap(), "index").unwrap();
        assert_eq!(index.manifests, vec![a.clone(), b]);
        let err = save_index(&layout, vec![a.clone(), a], None).unwrap_err().to_string();
        assert!(err.contains("second image for linux/amd64"), "{err}");
    }
}
