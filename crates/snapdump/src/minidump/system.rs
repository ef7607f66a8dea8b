//! SystemInfo and MiscInfo: the machine, the kernel and the process's times.

use minidump_common::format::{
    CPU_INFORMATION, MINIDUMP_MISC_INFO, MINIDUMP_SYSTEM_INFO, MiscInfoFlags, PlatformId,
    ProcessorArchitecture, RVA,
};

use crate::capture::Capture;

/// The kernel reports process times in USER_HZ ticks, 100 per second on x86_64.
const USER_HZ: u64 = 100;

/// What SystemInfo needs from `/proc/cpuinfo`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CpuInfo {
    pub vendor: String,
    pub family: u32,
    pub model: u32,
    pub stepping: u32,
    pub processors: u32,
}

/// Parse `/proc/cpuinfo`: the first processor's identity and the number of processors.
pub fn parse_cpuinfo(text: &[u8]) -> CpuInfo {
    let mut info = CpuInfo::default();
    let mut first = true;
    for line in String::from_utf8_lossy(text).lines() {
        let Some((key, value)) = line.split_once(':') else {
            if line.trim().is_empty() && info.processors > 0 {
                first = false;
            }
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        if key == "processor" {
            info.processors += 1;
            continue;
        }
        if !first {
            continue;
        }
        let number = || value.parse::<u32>().unwrap_or(0);
        match key {
            "vendor_id" => info.vendor = value.to_owned(),
            "cpu family" => info.family = number(),
            "model" => info.model = number(),
            "stepping" => info.stepping = number(),
            _ => {}
        }
    }
    info
}

/// The kernel's version as (major, minor, patch) and a `uname -srvm`-like description.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OsVersion {
    pub major: u32,
    pub minor: u32,
    pub build: u32,
    pub description: String,
}

pub fn os_version() -> OsVersion {
    let read = |name: &str| {
        std::fs::read_to_string(format!("/proc/sys/kernel/{name}"))
            .map(|s| s.trim().to_owned())
            .unwrap_or_default()
    };
    let release = read("osrelease");
    let mut version = parse_release(&release);
    let ostype = read("ostype");
    let ostype = if ostype.is_empty() {
        "Linux".to_owned()
    } else {
        ostype
    };
    version.description = format!("{ostype} {release} {} x86_64", read("version"))
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    version
}

/// `6.1.0-18-amd64` → 6, 1, 0.
pub fn parse_release(release: &str) -> OsVersion {
    let mut numbers = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|part| part.parse::<u32>().unwrap_or(0));
    OsVersion {
        major: numbers.next().unwrap_or(0),
        minor: numbers.next().unwrap_or(0),
        build: numbers.next().unwrap_or(0),
        description: String::new(),
    }
}

/// CPUID leaf 1's EAX, rebuilt from family, model and stepping.
fn cpuid_signature(cpu: &CpuInfo) -> u32 {
    let (base_family, ext_family) = if cpu.family > 0xf {
        (0xf, cpu.family - 0xf)
    } else {
        (cpu.family, 0)
    };
    (cpu.stepping & 0xf)
        | (cpu.model & 0xf) << 4
        | (base_family & 0xf) << 8
        | (cpu.model >> 4 & 0xf) << 16
        | (ext_family & 0xff) << 20
}

pub fn system_info(cpu: &CpuInfo, os: &OsVersion, csd_version_rva: RVA) -> MINIDUMP_SYSTEM_INFO {
    let mut data = [0u8; 24];
    let mut vendor = [0u8; 12];
    for (slot, byte) in vendor.iter_mut().zip(cpu.vendor.bytes()) {
        *slot = byte;
    }
    // vendor_id[3] holds CPUID 0's EBX, EDX, ECX: the vendor string's bytes in order.
    data[..12].copy_from_slice(&vendor);
    data[12..16].copy_from_slice(&cpuid_signature(cpu).to_le_bytes());
    MINIDUMP_SYSTEM_INFO {
        processor_architecture: ProcessorArchitecture::PROCESSOR_ARCHITECTURE_AMD64 as u16,
        processor_level: cpu.family.min(u32::from(u16::MAX)) as u16,
        processor_revision: ((cpu.model & 0xff) << 8 | (cpu.stepping & 0xff)) as u16,
        number_of_processors: cpu.processors.clamp(1, 255) as u8,
        product_type: 0,
        major_version: os.major,
        minor_version: os.minor,
        build_number: os.build,
        platform_id: PlatformId::Linux as u32,
        csd_version_rva,
        suite_mask: 0,
        reserved2: 0,
        cpu: CPU_INFORMATION { data },
    }
}

/// The system's boot time (seconds since the epoch), from `/proc/stat`.
fn boot_time() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines()
        .find_map(|line| line.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// MiscInfo: the pid and the process's start time and CPU times.
pub fn misc_info(capture: &Capture) -> MINIDUMP_MISC_INFO {
    let mut flags = MiscInfoFlags::MINIDUMP_MISC1_PROCESS_ID;
    let mut times = (0, 0, 0);
    if let Some(boot) = boot_time() {
        flags |= MiscInfoFlags::MINIDUMP_MISC1_PROCESS_TIMES;
        let secs = |ticks: u64| (ticks / USER_HZ).min(u64::from(u32::MAX)) as u32;
        let created = boot + capture.stat.starttime / USER_HZ;
        times = (
            created.min(u64::from(u32::MAX)) as u32,
            secs(capture.stat.utime),
            secs(capture.stat.stime),
        );
    }
    MINIDUMP_MISC_INFO {
        size_of_info: crate::minidump::format::size_of::<MINIDUMP_MISC_INFO>() as u32,
        flags1: flags.bits(),
        process_id: capture.pid as u32,
        process_create_time: times.0,
        process_user_time: times.1,
        process_kernel_time: times.2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpuinfo_first_processor_and_count() {
        let text = b"processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 85\nmodel name\t: Xeon\nstepping\t: 7\n\nprocessor\t: 1\nvendor_id\t: Other\ncpu family\t: 9\n\n";
        let cpu = parse_cpuinfo(text);
        assert_eq!(
            cpu,
            CpuInfo {
                vendor: "GenuineIntel".into(),
                family: 6,
                model: 85,
                stepping: 7,
                processors: 2,
            }
        );
        assert_eq!(cpuid_signature(&cpu), 0x50657);
        let info = system_info(&cpu, &parse_release("6.1.0-18-amd64"), 0);
        assert_eq!(info.processor_revision, 0x5507);
        assert_eq!(&info.cpu.data[..12], b"GenuineIntel");
        assert_eq!((info.major_version, info.minor_version), (6, 1));
        assert_eq!(parse_cpuinfo(b"garbage\n\xff"), CpuInfo::default());
    }

    #[test]
    fn amd_family_above_15_uses_the_extended_field() {
        let cpu = CpuInfo {
            vendor: "AuthenticAMD".into(),
            family: 25,
            model: 1,
            stepping: 1,
            processors: 4,
        };
        assert_eq!(cpuid_signature(&cpu), 0xa00f11);
    }
}
