//! Which foreign platforms this machine can run steps for: those with a
//! QEMU user-mode handler registered in binfmt_misc with the fix-binary
//! (`F`) flag.
//!
//! With `F` the kernel opened the interpreter when the handler was
//! registered, so an emulated step's container needs nothing of QEMU in its
//! rootfs or mounts: the kernel runs the registered interpreter for every
//! foreign ELF the step executes, whatever mount namespace it is in. Without
//! `F` the interpreter path would be looked up inside the container, where
//! it is not — such handlers are not counted.

use std::path::Path;

/// Where binfmt_misc is mounted.
pub const BINFMT_MISC: &str = "/proc/sys/fs/binfmt_misc";

/// One registered handler, as its file under binfmt_misc reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handler {
    pub name: String,
    pub enabled: bool,
    pub interpreter: String,
    pub flags: String,
    /// The ELF header bytes the handler matches (with `mask` applied).
    pub magic: Vec<u8>,
}

impl Handler {
    /// Parses a handler file (`enabled`, `interpreter …`, `flags: …`,
    /// `offset 0`, `magic <hex>`, `mask <hex>`); `None` for a file that is
    /// not a magic-number handler (an extension handler, `status`).
    pub fn parse(name: &str, text: &str) -> Option<Handler> {
        let mut h = Handler { name: name.to_owned(), enabled: false, interpreter: String::new(), flags: String::new(), magic: vec![] };
        let mut offset = None;
        for line in text.lines() {
            let line = line.trim();
            if line == "enabled" {
                h.enabled = true;
            } else if let Some(i) = line.strip_prefix("interpreter ") {
                h.interpreter = i.to_owned();
            } else if let Some(f) = line.strip_prefix("flags:") {
                h.flags = f.trim().to_owned();
            } else if let Some(o) = line.strip_prefix("offset ") {
                offset = o.trim().parse::<u32>().ok();
            } else if let Some(m) = line.strip_prefix("magic ") {
                h.magic = hex(m.trim())?;
            }
        }
        (offset == Some(0) && !h.magic.is_empty()).then_some(h)
    }

    /// Whether the kernel holds the interpreter open (`F`).
    pub fn fix_binary(&self) -> bool {
        self.flags.contains('F')
    }

    /// The platform of the ELF files this handler matches (`linux/arm64`
    /// for the aarch64 magic), from the ELF class, byte order and machine.
    pub fn platform(&self) -> Option<String> {
        let m = &self.magic;
        if m.len() < 20 || &m[..4] != b"\x7fELF" {
            return None;
        }
        let (class64, little) = (m[4] == 2, m[5] == 1);
        let machine = if little { u16::from_le_bytes([m[18], m[19]]) } else { u16::from_be_bytes([m[18], m[19]]) };
        let arch = match (machine, class64, little) {
            (0xb7, true, true) => "arm64",
            (0x28, false, true) => "arm/v7",
            (0x3e, true, true) => "amd64",
            (0x03, false, true) => "386",
            (0x15, true, true) => "ppc64le",
            (0x16, true, false) => "s390x",
            (0xf3, true, true) => "riscv64",
            (0x08, true, true) => "mips64le",
            _ => return None,
        };
        Some(format!("linux/{arch}"))
    }
}

fn hex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// Every handler registered under `dir` (normally [`BINFMT_MISC`]);
/// empty when binfmt_misc is not mounted.
pub fn handlers(dir: &Path) -> Vec<Handler> {
    let Ok(entries) = std::fs::read_dir(dir) else { return vec![] };
    let mut out: Vec<Handler> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            if name == "register" || name == "status" {
                return None;
            }
            Handler::parse(&name, &std::fs::read_to_string(e.path()).ok()?)
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The platforms, other than `native`, that enabled fix-binary handlers
/// under `dir` let this machine run, sorted and without repeats.
pub fn emulated_platforms(dir: &Path, native: &str) -> Vec<String> {
    let mut out: Vec<String> = handlers(dir)
        .iter()
        .filter(|h| h.enabled && h.fix_binary())
        .filter_map(Handler::platform)
        .filter(|p| p != native)
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const AARCH64: &str = "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: PF\noffset 0\n\
        magic 7f454c460201010000000000000000000200b700\nmask ffffffffffffff00fffffffffffffffffeffffff\n";

    #[test]
    fn an_aarch64_qemu_handler_with_the_fix_binary_flag_offers_linux_arm64() {
        let h = Handler::parse("qemu-aarch64", AARCH64).unwrap();
        assert!(h.enabled && h.fix_binary());
        assert_eq!(h.platform().as_deref(), Some("linux/arm64"));
    }

    #[test]
    fn only_enabled_fix_binary_handlers_of_foreign_platforms_count() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("status"), "enabled\n").unwrap();
        std::fs::write(dir.path().join("qemu-aarch64"), AARCH64).unwrap();
        // Without F the interpreter would be looked up inside the container.
        let arm = AARCH64.replace("7f454c460201010000000000000000000200b700", "7f454c4601010100000000000000000002002800");
        std::fs::write(dir.path().join("qemu-arm"), arm.replace("flags: PF", "flags: P")).unwrap();
        let s390 = "disabled\ninterpreter /q\nflags: F\noffset 0\nmagic 7f454c4602020100000000000000000000020016\n";
        std::fs::write(dir.path().join("qemu-s390x"), s390).unwrap();
        let amd64 = "enabled\ninterpreter /q\nflags: F\noffset 0\nmagic 7f454c4602010100000000000000000002003e00\n";
        std::fs::write(dir.path().join("qemu-x86_64"), amd64).unwrap();
        std::fs::write(dir.path().join("python3.11"), "enabled\ninterpreter /usr/bin/python3.11\nflags: \noffset 0\nmagic a70d0d0a\n").unwrap();
        assert_eq!(emulated_platforms(dir.path(), "linux/amd64"), vec!["linux/arm64".to_owned()]);
        assert_eq!(emulated_platforms(dir.path(), "linux/arm64"), vec!["linux/amd64".to_owned()]);
    }

    #[test]
    fn no_binfmt_misc_means_no_emulation() {
        assert!(emulated_platforms(Path::new("/nonexistent/binfmt_misc"), "linux/amd64").is_empty());
    }
}
