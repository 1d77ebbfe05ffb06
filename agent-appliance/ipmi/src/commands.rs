//! Typed IPMI commands: request bytes and response parsing (IPMI 2.0 chapters 20, 22,
//! 24, 28). Each parser checks lengths and reports a protocol error, never panics.

use crate::error::Error;
use crate::message::netfn;

/// Privilege levels (IPMI 2.0 table 6-1... "privilege levels").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Privilege {
    /// Callback.
    Callback,
    /// User: read-only commands.
    User,
    /// Operator: chassis control and most commands.
    Operator,
    /// Administrator (the default).
    #[default]
    Administrator,
}

impl Privilege {
    /// The level's number on the wire.
    pub fn number(self) -> u8 {
        match self {
            Privilege::Callback => 1,
            Privilege::User => 2,
            Privilege::Operator => 3,
            Privilege::Administrator => 4,
        }
    }
}

/// A command: netFn, command code, request data, and its name for errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// Request network function.
    pub netfn: u8,
    /// Command code.
    pub cmd: u8,
    /// Request data.
    pub data: Vec<u8>,
    /// Name for messages.
    pub name: &'static str,
}

fn short(name: &str, data: &[u8], need: usize) -> Result<(), Error> {
    if data.len() < need {
        return Err(Error::protocol(format!(
            "{name}: response has {} data bytes, expected at least {need}",
            data.len()
        )));
    }
    Ok(())
}

/// Get Channel Authentication Capabilities for the current channel, asking for the
/// IPMI 2.0 extended data.
pub fn get_channel_auth_caps(privilege: Privilege) -> Command {
    Command {
        netfn: netfn::APP,
        cmd: 0x38,
        data: vec![0x8e, privilege.number()],
        name: "Get Channel Authentication Capabilities",
    }
}

/// What Get Channel Authentication Capabilities says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthCaps {
    /// The channel supports IPMI 2.0 (RMCP+) sessions.
    pub ipmi20: bool,
    /// The channel supports IPMI 1.5 sessions.
    pub ipmi15: bool,
}

/// Parses the Get Channel Authentication Capabilities response data.
pub fn parse_auth_caps(d: &[u8]) -> Result<AuthCaps, Error> {
    short("Get Channel Authentication Capabilities", d, 8)?;
    let extended = d[1] & 0x80 != 0;
    Ok(AuthCaps {
        ipmi20: extended && d[3] & 0x02 != 0,
        ipmi15: !extended || d[3] & 0x01 != 0,
    })
}

/// Get Channel Cipher Suites, list by cipher suite, `index` 0..=63.
pub fn get_cipher_suites(index: u8) -> Command {
    Command {
        netfn: netfn::APP,
        cmd: 0x54,
        data: vec![0x0e, 0x00, 0x80 | (index & 0x3f)],
        name: "Get Channel Cipher Suites",
    }
}

/// Extracts the cipher suite ids from the concatenated record data of Get Channel
/// Cipher Suites responses (after each response's channel byte).
pub fn parse_cipher_suite_records(records: &[u8]) -> Vec<u8> {
    let mut ids = Vec::new();
    let mut i = 0;
    while i < records.len() {
        match records[i] {
            0xc0 if i + 1 < records.len() => {
                ids.push(records[i + 1]);
                i += 2;
            }
            // OEM suite: id, then a 3-byte IANA.
            0xc1 if i + 4 < records.len() => i += 5,
            // Algorithm bytes (0x00.., 0x40.., 0x80..) and anything unknown.
            _ => i += 1,
        }
    }
    ids
}

/// Set Session Privilege Level.
pub fn set_session_privilege(p: Privilege) -> Command {
    Command {
        netfn: netfn::APP,
        cmd: 0x3b,
        data: vec![p.number()],
        name: "Set Session Privilege Level",
    }
}

/// Close Session for the BMC's session id.
pub fn close_session(bmc_sid: u32) -> Command {
    Command {
        netfn: netfn::APP,
        cmd: 0x3c,
        data: bmc_sid.to_le_bytes().to_vec(),
        name: "Close Session",
    }
}

/// Get Device ID.
pub fn get_device_id() -> Command {
    Command {
        netfn: netfn::APP,
        cmd: 0x01,
        data: vec![],
        name: "Get Device ID",
    }
}

/// What Get Device ID says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceId {
    /// Device id.
    pub device_id: u8,
    /// Device revision (bits 3:0).
    pub device_revision: u8,
    /// Major firmware revision.
    pub firmware_major: u8,
    /// Minor firmware revision (BCD on the wire, decoded).
    pub firmware_minor: u8,
    /// IPMI version, e.g. (2, 0).
    pub ipmi_version: (u8, u8),
    /// IANA manufacturer id.
    pub manufacturer_id: u32,
    /// Product id.
    pub product_id: u16,
    /// Auxiliary firmware revision, when present.
    pub aux_firmware: Option<[u8; 4]>,
}

fn bcd(b: u8) -> u8 {
    (b >> 4) * 10 + (b & 0x0f)
}

/// Parses the Get Device ID response data.
pub fn parse_device_id(d: &[u8]) -> Result<DeviceId, Error> {
    short("Get Device ID", d, 11)?;
    Ok(DeviceId {
        device_id: d[0],
        device_revision: d[1] & 0x0f,
        firmware_major: d[2] & 0x7f,
        firmware_minor: bcd(d[3]),
        ipmi_version: (d[4] & 0x0f, d[4] >> 4),
        manufacturer_id: u32::from_le_bytes([d[6], d[7], d[8] & 0x0f, 0]),
        product_id: u16::from_le_bytes([d[9], d[10]]),
        aux_firmware: d.get(11..15).map(|a| [a[0], a[1], a[2], a[3]]),
    })
}

/// Get Chassis Status.
pub fn get_chassis_status() -> Command {
    Command {
        netfn: netfn::CHASSIS,
        cmd: 0x01,
        data: vec![],
        name: "Get Chassis Status",
    }
}

/// What Get Chassis Status says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChassisStatus {
    /// System power is on.
    pub power_on: bool,
    /// Power overload.
    pub power_overload: bool,
    /// Power interlock active.
    pub interlock: bool,
    /// Main power fault.
    pub power_fault: bool,
    /// Power control fault.
    pub control_fault: bool,
    /// Power restore policy: 0 stay off, 1 restore previous, 2 always on, 3 unknown.
    pub restore_policy: u8,
    /// Last power event byte.
    pub last_event: u8,
    /// Chassis intrusion active.
    pub intrusion: bool,
    /// Front panel lockout active.
    pub front_panel_lockout: bool,
    /// Drive fault.
    pub drive_fault: bool,
    /// Cooling/fan fault.
    pub cooling_fault: bool,
}

/// Parses the Get Chassis Status response data.
pub fn parse_chassis_status(d: &[u8]) -> Result<ChassisStatus, Error> {
    short("Get Chassis Status", d, 3)?;
    Ok(ChassisStatus {
        power_on: d[0] & 0x01 != 0,
        power_overload: d[0] & 0x02 != 0,
        interlock: d[0] & 0x04 != 0,
        power_fault: d[0] & 0x08 != 0,
        control_fault: d[0] & 0x10 != 0,
        restore_policy: (d[0] >> 5) & 0x03,
        last_event: d[1],
        intrusion: d[2] & 0x01 != 0,
        front_panel_lockout: d[2] & 0x02 != 0,
        drive_fault: d[2] & 0x04 != 0,
        cooling_fault: d[2] & 0x08 != 0,
    })
}

/// A Chassis Control action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChassisAction {
    /// Power down (hard off).
    PowerOff,
    /// Power up.
    PowerOn,
    /// Power cycle.
    PowerCycle,
    /// Hard reset.
    HardReset,
    /// Pulse a diagnostic interrupt (NMI).
    DiagnosticInterrupt,
    /// Soft shutdown via ACPI overtemperature emulation (soft off).
    SoftShutdown,
}

/// Chassis Control.
pub fn chassis_control(a: ChassisAction) -> Command {
    let v = match a {
        ChassisAction::PowerOff => 0,
        ChassisAction::PowerOn => 1,
        ChassisAction::PowerCycle => 2,
        ChassisAction::HardReset => 3,
        ChassisAction::DiagnosticInterrupt => 4,
        ChassisAction::SoftShutdown => 5,
    };
    Command {
        netfn: netfn::CHASSIS,
        cmd: 0x02,
        data: vec![v],
        name: "Chassis Control",
    }
}

/// A boot device override (boot flags parameter 5, data 2 bits 5:2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootDevice {
    /// No override.
    NoOverride,
    /// Network boot (PXE).
    Pxe,
    /// The default hard disk.
    Disk,
    /// Hard disk, safe mode.
    DiskSafe,
    /// Diagnostic partition.
    Diagnostic,
    /// CD/DVD.
    Cdrom,
    /// BIOS / firmware setup.
    BiosSetup,
    /// Remote floppy / primary removable media.
    RemoteFloppy,
    /// Remote CD/DVD.
    RemoteCdrom,
    /// Primary remote media.
    RemoteMedia,
    /// Remote hard disk.
    RemoteDisk,
    /// Floppy / primary removable media.
    Floppy,
    /// A selector value this crate does not name.
    Other(u8),
}

impl BootDevice {
    fn selector(self) -> u8 {
        match self {
            BootDevice::NoOverride => 0x0,
            BootDevice::Pxe => 0x1,
            BootDevice::Disk => 0x2,
            BootDevice::DiskSafe => 0x3,
            BootDevice::Diagnostic => 0x4,
            BootDevice::Cdrom => 0x5,
            BootDevice::BiosSetup => 0x6,
            BootDevice::RemoteFloppy => 0x7,
            BootDevice::RemoteCdrom => 0x8,
            BootDevice::RemoteMedia => 0x9,
            BootDevice::RemoteDisk => 0xb,
            BootDevice::Floppy => 0xf,
            BootDevice::Other(v) => v & 0x0f,
        }
    }

    fn from_selector(v: u8) -> BootDevice {
        match v & 0x0f {
            0x0 => BootDevice::NoOverride,
            0x1 => BootDevice::Pxe,
            0x2 => BootDevice::Disk,
            0x3 => BootDevice::DiskSafe,
            0x4 => BootDevice::Diagnostic,
            0x5 => BootDevice::Cdrom,
            0x6 => BootDevice::BiosSetup,
            0x7 => BootDevice::RemoteFloppy,
            0x8 => BootDevice::RemoteCdrom,
            0x9 => BootDevice::RemoteMedia,
            0xb => BootDevice::RemoteDisk,
            0xf => BootDevice::Floppy,
            o => BootDevice::Other(o),
        }
    }
}

/// Set System Boot Options, boot flags (parameter 5): valid, once or persistent,
/// legacy BIOS boot type, the device.
pub fn set_boot_device(d: BootDevice, persistent: bool) -> Command {
    let flags = 0x80 | if persistent { 0x40 } else { 0 };
    Command {
        netfn: netfn::CHASSIS,
        cmd: 0x08,
        data: vec![0x05, flags, d.selector() << 2, 0, 0, 0],
        name: "Set System Boot Options",
    }
}

/// Get System Boot Options, boot flags (parameter 5).
pub fn get_boot_flags() -> Command {
    Command {
        netfn: netfn::CHASSIS,
        cmd: 0x09,
        data: vec![0x05, 0x00, 0x00],
        name: "Get System Boot Options",
    }
}

/// Parses boot flags: the device (NoOverride when the flags are not valid) and
/// whether the override is persistent.
pub fn parse_boot_flags(d: &[u8]) -> Result<(BootDevice, bool), Error> {
    short("Get System Boot Options", d, 4)?;
    if d[1] & 0x7f != 0x05 {
        return Err(Error::protocol(format!(
            "Get System Boot Options: answered parameter {} instead of 5",
            d[1] & 0x7f
        )));
    }
    let (flags, dev) = (d[2], d[3]);
    if flags & 0x80 == 0 {
        return Ok((BootDevice::NoOverride, false));
    }
    Ok((BootDevice::from_selector(dev >> 2), flags & 0x40 != 0))
}

/// Activate Payload (SOL, instance 1) with encryption and authentication as the
/// session has them.
pub fn activate_sol(encrypted: bool) -> Command {
    // Aux byte 1: bit 7 encryption, bit 6 authentication, bits 3:2 = 01: serial
    // alerts deferred while SOL is active.
    let aux = 0x40 | if encrypted { 0x80 } else { 0 } | 0x04;
    Command {
        netfn: netfn::APP,
        cmd: 0x48,
        data: vec![0x01, 0x01, aux, 0, 0, 0],
        name: "Activate Payload",
    }
}

/// What Activate Payload says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SolActivation {
    /// Largest SOL payload the BMC accepts from us.
    pub inbound_max: u16,
    /// Largest SOL payload the BMC sends.
    pub outbound_max: u16,
    /// The UDP port the BMC says carries the payload.
    pub port: u16,
}

/// Parses the Activate Payload response data.
pub fn parse_activate_sol(d: &[u8]) -> Result<SolActivation, Error> {
    short("Activate Payload", d, 12)?;
    Ok(SolActivation {
        inbound_max: u16::from_le_bytes([d[4], d[5]]),
        outbound_max: u16::from_le_bytes([d[6], d[7]]),
        port: u16::from_le_bytes([d[8], d[9]]),
    })
}

/// Deactivate Payload (SOL, instance 1).
pub fn deactivate_sol() -> Command {
    Command {
        netfn: netfn::APP,
        cmd: 0x49,
        data: vec![0x01, 0x01, 0, 0, 0, 0],
        name: "Deactivate Payload",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_flags_bytes() {
        assert_eq!(
            set_boot_device(BootDevice::Pxe, false).data,
            [0x05, 0x80, 0x04, 0, 0, 0]
        );
        assert_eq!(
            set_boot_device(BootDevice::BiosSetup, true).data,
            [0x05, 0xc0, 0x18, 0, 0, 0]
        );
        assert_eq!(
            parse_boot_flags(&[0x01, 0x05, 0xc0, 0x08, 0, 0, 0]),
            Ok((BootDevice::Disk, true))
        );
        assert_eq!(
            parse_boot_flags(&[0x01, 0x05, 0x00, 0x08, 0, 0, 0]),
            Ok((BootDevice::NoOverride, false))
        );
        assert!(parse_boot_flags(&[0x01, 0x04, 0x80, 0x08]).is_err());
        assert!(parse_boot_flags(&[0x01]).is_err());
    }

    #[test]
    fn device_id_parse() {
        // ipmi_sim 2.0.33's answer for "mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f
        // 0x1291 0xf02" (device id 0, revision 0x23, firmware 9.08).
        let d = parse_device_id(&[
            0x00, 0x23, 0x09, 0x08, 0x02, 0x9f, 0x91, 0x12, 0x00, 0x02, 0x0f, 0, 0, 0, 0,
        ])
        .unwrap();
        assert_eq!((d.device_id, d.device_revision), (0, 3));
        assert_eq!((d.firmware_major, d.firmware_minor), (9, 8));
        assert_eq!(d.manufacturer_id, 0x1291);
        assert_eq!(d.product_id, 0x0f02);
        assert_eq!(d.ipmi_version, (2, 0));
        assert_eq!(d.aux_firmware, Some([0; 4]));
        assert!(parse_device_id(&[0x23]).is_err());
    }

    #[test]
    fn chassis_status_parse() {
        let s = parse_chassis_status(&[0x41, 0x00, 0x04]).unwrap();
        assert!(s.power_on && s.drive_fault && !s.intrusion);
        assert_eq!(s.restore_policy, 2);
        assert!(parse_chassis_status(&[0x01, 0x00]).is_err());
    }

    #[test]
    fn cipher_suite_records() {
        // Suites 3 and 17, then an OEM suite 0x80 with IANA, as pyghmi/OpenBMC list them.
        let r = [
            0xc0, 0x03, 0x01, 0x41, 0x81, 0xc0, 0x11, 0x03, 0x44, 0x81, 0xc1, 0x80, 0x01, 0x02,
            0x03, 0x01, 0x41, 0x81,
        ];
        assert_eq!(parse_cipher_suite_records(&r), [3, 17]);
        assert_eq!(parse_cipher_suite_records(&[0xc0]), Vec::<u8>::new());
    }

    #[test]
    fn auth_caps_parse() {
        let c = parse_auth_caps(&[0x01, 0x97, 0x04, 0x03, 0, 0, 0, 0]).unwrap();
        assert!(c.ipmi20 && c.ipmi15);
        let c = parse_auth_caps(&[0x01, 0x17, 0x04, 0x00, 0, 0, 0, 0]).unwrap();
        assert!(!c.ipmi20 && c.ipmi15);
    }
}
