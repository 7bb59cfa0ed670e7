//! CPU architectures of images, and every name each one goes by: EC2's,
//! Debian's (and OCI's, the same), and the ELF machine of its executables.

use serde::{Deserialize, Serialize};

/// A CPU architecture of an image.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Arch {
    /// 64-bit x86 (Debian's `amd64`).
    X86_64,
    /// 64-bit ARM (Graviton).
    Arm64,
}

impl Arch {
    /// The name EC2 uses (`x86_64`, `arm64`).
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Arm64 => "arm64",
        }
    }

    /// The name Debian (`dpkg --print-architecture`) and OCI image configs
    /// use (`amd64`, `arm64`).
    pub fn debian(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }

    /// The architecture of an ELF executable, if it is one of ours.
    pub fn of_elf(bytes: &[u8]) -> Option<Arch> {
        if bytes.len() < 20 || &bytes[..4] != b"\x7fELF" {
            return None;
        }
        match u16::from_le_bytes([bytes[18], bytes[19]]) {
            0x3e => Some(Arch::X86_64),
            0xb7 => Some(Arch::Arm64),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elf_headers() {
        let mut x86 = vec![0u8; 64];
        x86[..4].copy_from_slice(b"\x7fELF");
        x86[18] = 0x3e;
        assert_eq!(Arch::of_elf(&x86), Some(Arch::X86_64));
        x86[18] = 0xb7;
        assert_eq!(Arch::of_elf(&x86), Some(Arch::Arm64));
        assert_eq!(Arch::of_elf(b"#!/bin/sh\n"), None);
    }

    #[test]
    fn names() {
        assert_eq!(Arch::X86_64.as_str(), "x86_64");
        assert_eq!(Arch::X86_64.debian(), "amd64");
        assert_eq!(Arch::Arm64.debian(), "arm64");
    }
}
