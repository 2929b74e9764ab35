//! Guest operating systems and the four naming schemes hypervisors use for them.
//!
//! One table maps between VMware guestOS ids (the .vmx form `ubuntu-64`; OVF's `vmw:osType`
//! writes the vSphere API form `ubuntu64Guest`, which [`Os::from_vmware`] accepts too), the
//! DMTF CIM_OperatingSystem `OSType` numbers an OVF `OperatingSystemSection ovf:id` carries,
//! VirtualBox OS types (`Ubuntu_64`) and libosinfo short ids (`ubuntu22.04`).
//!
//! A lookup in any direction finds the first row that names the value, so each family's generic
//! row comes before its versioned rows: CIM 94 ("Ubuntu 64-Bit") finds the generic Ubuntu row,
//! libosinfo `ubuntu22.04` finds the 22.04 row, whose VMware and CIM ids are the generic ones.
//!
//! CIM numbers: 0 to 111 as the CIM schema's OSType ValueMap lists them (VirtualBox's
//! CIMOSType enum agrees up to 102). Sources disagree from 112 on (one schema listing has 112
//! "Windows Server 2012", 113 "Windows 8"; Google's OVF importer maps 113 "Windows Server 2012",
//! 114 "Windows 8" ... 121 "Windows 10 64-bit"), so rows for those systems carry no CIM number
//! and an OVF reader keeps such a number only as given ([`GuestOs::cim_id`]).

use serde::{Serialize, Serializer};
use std::fmt;

/// The broad family of an operating system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OsFamily {
    /// Microsoft Windows.
    Windows,
    /// Linux distributions.
    Linux,
    /// FreeBSD, OpenBSD, NetBSD.
    Bsd,
    /// Oracle/Sun Solaris.
    Solaris,
    /// Apple macOS.
    MacOs,
    /// MS-DOS, OS/2, NetWare and anything else.
    Other,
}

/// One row of the table.
#[derive(Debug)]
struct Row {
    name: &'static str,
    family: OsFamily,
    bits: u8,
    vmware: Option<&'static str>,
    cim: Option<u16>,
    virtualbox: Option<&'static str>,
    libosinfo: Option<&'static str>,
}

const fn row(
    name: &'static str,
    family: OsFamily,
    bits: u8,
    vmware: Option<&'static str>,
    cim: Option<u16>,
    virtualbox: Option<&'static str>,
    libosinfo: Option<&'static str>,
) -> Row {
    Row {
        name,
        family,
        bits,
        vmware,
        cim,
        virtualbox,
        libosinfo,
    }
}

use OsFamily::{Bsd, Linux, MacOs, Other, Solaris, Windows};

/// The table. Within a family, generic rows come first (see the module documentation).
#[rustfmt::skip]
static TABLE: &[Row] = &[
    // Other / unknown.
    row("Other", Other, 32, Some("other"), Some(1), Some("Other"), None),
    row("Other 64-bit", Other, 64, Some("other-64"), Some(102), Some("Other_64"), None),
    row("Unknown", Other, 32, None, Some(0), None, None),
    row("MS-DOS", Other, 16, Some("dos"), Some(14), Some("DOS"), Some("msdos6.22")),
    row("OS/2", Other, 32, Some("os2"), Some(12), Some("OS2"), None),
    row("NetWare", Other, 32, Some("netware6"), Some(21), Some("Netware"), None),
    row("VMware ESXi", Other, 64, Some("vmkernel7"), Some(104), None, None),
    // Linux, generic.
    row("Other Linux 64-bit", Linux, 64, Some("otherlinux-64"), Some(101), Some("Linux_64"), None),
    row("Other Linux", Linux, 32, Some("otherlinux"), Some(36), Some("Linux"), None),
    row("Linux 2.6.x 64-bit", Linux, 64, Some("other26xlinux-64"), Some(100), Some("Linux26_64"), None),
    row("Linux 2.6.x", Linux, 32, Some("other26xlinux"), Some(99), Some("Linux26"), None),
    row("Linux 2.4.x 64-bit", Linux, 64, Some("other24xlinux-64"), Some(98), Some("Linux24_64"), None),
    row("Linux 2.4.x", Linux, 32, Some("other24xlinux"), Some(97), Some("Linux24"), None),
    row("Linux 3.x 64-bit", Linux, 64, Some("other3xlinux-64"), Some(101), Some("Linux_64"), None),
    row("Linux 4.x 64-bit", Linux, 64, Some("other4xlinux-64"), Some(101), Some("Linux_64"), None),
    row("Linux 5.x and later 64-bit", Linux, 64, Some("other5xlinux-64"), Some(101), Some("Linux_64"), Some("linux2022")),
    // Ubuntu.
    row("Ubuntu 64-bit", Linux, 64, Some("ubuntu-64"), Some(94), Some("Ubuntu_64"), None),
    row("Ubuntu", Linux, 32, Some("ubuntu"), Some(93), Some("Ubuntu"), None),
    row("Ubuntu 18.04", Linux, 64, Some("ubuntu-64"), Some(94), Some("Ubuntu_64"), Some("ubuntu18.04")),
    row("Ubuntu 20.04", Linux, 64, Some("ubuntu-64"), Some(94), Some("Ubuntu_64"), Some("ubuntu20.04")),
    row("Ubuntu 22.04", Linux, 64, Some("ubuntu-64"), Some(94), Some("Ubuntu_64"), Some("ubuntu22.04")),
    row("Ubuntu 24.04", Linux, 64, Some("ubuntu-64"), Some(94), Some("Ubuntu_64"), Some("ubuntu24.04")),
    // Debian.
    row("Debian 64-bit", Linux, 64, Some("debian10-64"), Some(96), Some("Debian_64"), None),
    row("Debian", Linux, 32, Some("debian10"), Some(95), Some("Debian"), None),
    row("Debian 9", Linux, 64, Some("debian9-64"), Some(96), Some("Debian_64"), Some("debian9")),
    row("Debian 10", Linux, 64, Some("debian10-64"), Some(96), Some("Debian10_64"), Some("debian10")),
    row("Debian 11", Linux, 64, Some("debian11-64"), Some(96), Some("Debian11_64"), Some("debian11")),
    row("Debian 12", Linux, 64, Some("debian12-64"), Some(96), Some("Debian12_64"), Some("debian12")),
    // Red Hat family.
    row("Red Hat Enterprise Linux 64-bit", Linux, 64, Some("rhel7-64"), Some(80), Some("RedHat_64"), None),
    row("Red Hat Enterprise Linux", Linux, 32, Some("rhel6"), Some(79), Some("RedHat"), None),
    row("Red Hat Enterprise Linux 6", Linux, 64, Some("rhel6-64"), Some(80), Some("RedHat_64"), Some("rhel6.10")),
    row("Red Hat Enterprise Linux 7", Linux, 64, Some("rhel7-64"), Some(80), Some("RedHat_64"), Some("rhel7.0")),
    row("Red Hat Enterprise Linux 8", Linux, 64, Some("rhel8-64"), Some(80), Some("RedHat_64"), Some("rhel8.0")),
    row("Red Hat Enterprise Linux 9", Linux, 64, Some("rhel9-64"), Some(80), Some("RedHat_64"), Some("rhel9.0")),
    row("CentOS 64-bit", Linux, 64, Some("centos-64"), Some(107), Some("RedHat_64"), None),
    row("CentOS", Linux, 32, Some("centos"), Some(106), Some("RedHat"), None),
    row("CentOS 7", Linux, 64, Some("centos7-64"), Some(107), Some("RedHat_64"), Some("centos7.0")),
    row("CentOS 8", Linux, 64, Some("centos8-64"), Some(107), Some("RedHat_64"), Some("centos8")),
    row("Oracle Linux 64-bit", Linux, 64, Some("oraclelinux-64"), Some(109), Some("Oracle_64"), None),
    row("Oracle Linux", Linux, 32, Some("oraclelinux"), Some(108), Some("Oracle"), None),
    row("Oracle Linux 8", Linux, 64, Some("oraclelinux8-64"), Some(109), Some("Oracle_64"), Some("ol8.0")),
    row("Oracle Linux 9", Linux, 64, Some("oraclelinux9-64"), Some(109), Some("Oracle_64"), Some("ol9.0")),
    row("Rocky Linux", Linux, 64, Some("rockylinux-64"), Some(101), Some("RedHat_64"), Some("rocky9")),
    row("AlmaLinux", Linux, 64, Some("almalinux-64"), Some(101), Some("RedHat_64"), Some("almalinux9")),
    row("Fedora 64-bit", Linux, 64, Some("fedora-64"), Some(101), Some("Fedora_64"), None),
    row("Fedora", Linux, 32, Some("fedora"), Some(36), Some("Fedora"), None),
    // SUSE.
    row("SUSE Linux Enterprise 64-bit", Linux, 64, Some("sles15-64"), Some(85), Some("OpenSUSE_64"), None),
    row("SUSE Linux Enterprise", Linux, 32, Some("sles"), Some(84), Some("OpenSUSE"), None),
    row("SUSE Linux Enterprise 12", Linux, 64, Some("sles12-64"), Some(85), Some("OpenSUSE_64"), Some("sles12sp5")),
    row("SUSE Linux Enterprise 15", Linux, 64, Some("sles15-64"), Some(85), Some("OpenSUSE_64"), Some("sle15")),
    row("openSUSE 64-bit", Linux, 64, Some("opensuse-64"), Some(83), Some("OpenSUSE_64"), None),
    row("openSUSE", Linux, 32, Some("opensuse"), Some(82), Some("OpenSUSE"), None),
    // Other distributions.
    row("Mandriva 64-bit", Linux, 64, Some("mandriva-64"), Some(90), Some("Mandriva_64"), None),
    row("Mandriva", Linux, 32, Some("mandriva"), Some(89), Some("Mandriva"), None),
    row("TurboLinux 64-bit", Linux, 64, Some("turbolinux-64"), Some(92), Some("Turbolinux_64"), None),
    row("TurboLinux", Linux, 32, Some("turbolinux"), Some(91), Some("Turbolinux"), None),
    row("Arch Linux", Linux, 64, Some("other5xlinux-64"), Some(101), Some("ArchLinux_64"), Some("archlinux")),
    row("Gentoo", Linux, 64, Some("other5xlinux-64"), Some(101), Some("Gentoo_64"), Some("gentoo")),
    // Windows (client).
    row("Windows 10 64-bit", Windows, 64, Some("windows9-64"), None, Some("Windows10_64"), Some("win10")),
    row("Windows 10", Windows, 32, Some("windows9"), None, Some("Windows10"), Some("win10")),
    row("Windows 11", Windows, 64, Some("windows11-64"), None, Some("Windows11_64"), Some("win11")),
    row("Windows 8 64-bit", Windows, 64, Some("windows8-64"), None, Some("Windows8_64"), Some("win8")),
    row("Windows 8", Windows, 32, Some("windows8"), None, Some("Windows8"), Some("win8")),
    row("Windows 8.1 64-bit", Windows, 64, Some("windows8-64"), None, Some("Windows81_64"), Some("win8.1")),
    row("Windows 8.1", Windows, 32, Some("windows8"), None, Some("Windows81"), Some("win8.1")),
    row("Windows 7 64-bit", Windows, 64, Some("windows7-64"), Some(105), Some("Windows7_64"), Some("win7")),
    row("Windows 7", Windows, 32, Some("windows7"), Some(105), Some("Windows7"), Some("win7")),
    row("Windows Vista 64-bit", Windows, 64, Some("winvista-64"), Some(74), Some("WindowsVista_64"), Some("winvista")),
    row("Windows Vista", Windows, 32, Some("winvista"), Some(73), Some("WindowsVista"), Some("winvista")),
    row("Windows XP 64-bit", Windows, 64, Some("winxppro-64"), Some(71), Some("WindowsXP_64"), Some("winxp")),
    row("Windows XP", Windows, 32, Some("winxppro"), Some(67), Some("WindowsXP"), Some("winxp")),
    row("Windows 2000", Windows, 32, Some("win2000pro"), Some(58), Some("Windows2000"), Some("win2k")),
    row("Windows NT", Windows, 32, Some("winnt"), Some(18), Some("WindowsNT4"), Some("winnt4.0")),
    row("Windows 98", Windows, 32, Some("win98"), Some(17), Some("Windows98"), Some("win98")),
    row("Windows 95", Windows, 32, Some("win95"), Some(16), Some("Windows95"), Some("win95")),
    row("Windows Me", Windows, 32, Some("winme"), Some(63), Some("WindowsMe"), Some("winme")),
    row("Windows 3.1", Windows, 16, Some("win31"), Some(15), Some("Windows31"), Some("win3.1")),
    // Windows Server.
    row("Windows Server 2022", Windows, 64, Some("windows2019srvnext-64"), None, Some("Windows2022_64"), Some("win2k22")),
    row("Windows Server 2019", Windows, 64, Some("windows2019srv-64"), None, Some("Windows2019_64"), Some("win2k19")),
    row("Windows Server 2016", Windows, 64, Some("windows9srv-64"), None, Some("Windows2016_64"), Some("win2k16")),
    row("Windows Server 2012 R2", Windows, 64, Some("windows8srv-64"), None, Some("Windows2012_64"), Some("win2k12r2")),
    row("Windows Server 2012", Windows, 64, Some("windows8srv-64"), None, Some("Windows2012_64"), Some("win2k12")),
    row("Windows Server 2008 R2", Windows, 64, Some("windows7srv-64"), Some(103), Some("Windows2008_64"), Some("win2k8r2")),
    row("Windows Server 2008 64-bit", Windows, 64, Some("winlonghorn-64"), Some(77), Some("Windows2008_64"), Some("win2k8")),
    row("Windows Server 2008", Windows, 32, Some("winlonghorn"), Some(76), Some("Windows2008"), Some("win2k8")),
    row("Windows Server 2003 64-bit", Windows, 64, Some("winnetenterprise-64"), Some(70), Some("Windows2003_64"), Some("win2k3")),
    row("Windows Server 2003", Windows, 32, Some("winnetenterprise"), Some(69), Some("Windows2003"), Some("win2k3")),
    // BSD.
    row("FreeBSD 64-bit", Bsd, 64, Some("freebsd-64"), Some(78), Some("FreeBSD_64"), None),
    row("FreeBSD", Bsd, 32, Some("freebsd"), Some(42), Some("FreeBSD"), None),
    row("FreeBSD 13", Bsd, 64, Some("freebsd13-64"), Some(78), Some("FreeBSD_64"), Some("freebsd13.0")),
    row("FreeBSD 14", Bsd, 64, Some("freebsd14-64"), Some(78), Some("FreeBSD_64"), Some("freebsd14.0")),
    row("OpenBSD 64-bit", Bsd, 64, Some("other-64"), Some(65), Some("OpenBSD_64"), None),
    row("OpenBSD", Bsd, 32, Some("other"), Some(65), Some("OpenBSD"), None),
    row("NetBSD 64-bit", Bsd, 64, Some("other-64"), Some(43), Some("NetBSD_64"), None),
    row("NetBSD", Bsd, 32, Some("other"), Some(43), Some("NetBSD"), None),
    // Solaris and macOS.
    row("Solaris 64-bit", Solaris, 64, Some("solaris11-64"), Some(81), Some("Solaris11_64"), Some("solaris11")),
    row("Solaris", Solaris, 32, Some("solaris10"), Some(29), Some("Solaris"), None),
    row("macOS 64-bit", MacOs, 64, Some("darwin-64"), Some(2), Some("MacOS_64"), None),
];

/// A known operating system: a handle to one row of the mapping table.
#[derive(Clone, Copy)]
pub struct Os(&'static Row);

impl Os {
    fn find(pred: impl Fn(&Row) -> bool) -> Option<Os> {
        TABLE.iter().find(|r| pred(r)).map(Os)
    }

    /// The row for a VMware guestOS id: the .vmx form (`windows9-64`) or the vSphere API form
    /// an OVF's `vmw:osType` carries (`windows9_64Guest`); case-insensitive.
    pub fn from_vmware(id: &str) -> Option<Os> {
        let key = vmware_key(id);
        Os::find(|r| r.vmware.is_some_and(|v| vmware_key(v) == key))
    }

    /// The row for a CIM OSType number (an OVF OperatingSystemSection's `ovf:id`).
    pub fn from_cim(id: u16) -> Option<Os> {
        Os::find(|r| r.cim == Some(id))
    }

    /// The row for a VirtualBox OS type id (`Ubuntu_64`); case-insensitive.
    pub fn from_virtualbox(id: &str) -> Option<Os> {
        Os::find(|r| r.virtualbox.is_some_and(|v| v.eq_ignore_ascii_case(id)))
    }

    /// The row for a libosinfo short id (`ubuntu22.04`, `win10`).
    pub fn from_libosinfo(id: &str) -> Option<Os> {
        Os::find(|r| r.libosinfo == Some(id))
    }

    /// A human name ("Ubuntu 22.04", "Windows Server 2019").
    pub fn name(self) -> &'static str {
        self.0.name
    }

    /// The family.
    pub fn family(self) -> OsFamily {
        self.0.family
    }

    /// 16, 32 or 64.
    pub fn bits(self) -> u8 {
        self.0.bits
    }

    /// The VMware guestOS id in .vmx form (`ubuntu-64`), when VMware has one.
    pub fn vmware(self) -> Option<&'static str> {
        self.0.vmware
    }

    /// The VMware guestOS id in vSphere API form (`ubuntu64Guest`), as OVF's `vmw:osType`
    /// writes it.
    pub fn vmware_api(self) -> Option<String> {
        let id = self.0.vmware?;
        Some(match id.strip_suffix("-64") {
            Some(base) if base.ends_with(|c: char| c.is_ascii_digit()) => format!("{base}_64Guest"),
            Some("other") => "otherGuest64".to_string(),
            Some(base) => format!("{base}64Guest"),
            None => format!("{id}Guest"),
        })
    }

    /// The CIM OSType number, when the table has a reliable one.
    pub fn cim(self) -> Option<u16> {
        self.0.cim
    }

    /// The VirtualBox OS type id, when VirtualBox has one.
    pub fn virtualbox(self) -> Option<&'static str> {
        self.0.virtualbox
    }

    /// The libosinfo short id, when the row is specific enough to have one.
    pub fn libosinfo(self) -> Option<&'static str> {
        self.0.libosinfo
    }
}

impl PartialEq for Os {
    fn eq(&self, other: &Os) -> bool {
        std::ptr::eq(self.0, other.0)
    }
}

impl Eq for Os {}

impl fmt::Debug for Os {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Os({:?})", self.0.name)
    }
}

impl fmt::Display for Os {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.name)
    }
}

impl Serialize for Os {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct View {
            name: &'static str,
            family: OsFamily,
            bits: u8,
            vmware: Option<&'static str>,
            cim: Option<u16>,
            virtualbox: Option<&'static str>,
            libosinfo: Option<&'static str>,
        }
        let r = self.0;
        View {
            name: r.name,
            family: r.family,
            bits: r.bits,
            vmware: r.vmware,
            cim: r.cim,
            virtualbox: r.virtualbox,
            libosinfo: r.libosinfo,
        }
        .serialize(s)
    }
}

/// A comparison key for VMware ids that makes the .vmx and API forms meet:
/// `windows8Server64Guest` and `windows8srv-64` both give `windows8srv64`.
fn vmware_key(id: &str) -> String {
    id.to_ascii_lowercase()
        .replace("guest", "")
        .replace("server", "srv")
        .replace(['-', '_'], "")
}

/// What a VM description says about its guest operating system.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GuestOs {
    /// The table row the ids matched, when one did (the most specific id wins).
    pub os: Option<Os>,
    /// The CIM OSType number as the source gave it.
    pub cim_id: Option<u16>,
    /// The VMware guestOS id as the source gave it.
    pub vmware_id: Option<String>,
    /// The VirtualBox OS type as the source gave it.
    pub virtualbox_id: Option<String>,
    /// The source's free-text description ("Ubuntu Linux (64-bit)").
    pub description: Option<String>,
}

impl GuestOs {
    /// Picks [`GuestOs::os`] from the ids set: VirtualBox's and VMware's ids are more specific
    /// than CIM numbers (a CIM "Other 64-bit" often stands beside a precise VMware id), so they
    /// win when both match.
    pub fn resolve(&mut self) {
        self.os = self
            .virtualbox_id
            .as_deref()
            .and_then(Os::from_virtualbox)
            .or_else(|| self.vmware_id.as_deref().and_then(Os::from_vmware))
            .or_else(|| self.cim_id.and_then(Os::from_cim));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_in_each_direction() {
        let u = Os::from_vmware("ubuntu-64").unwrap();
        assert_eq!(u.cim(), Some(94));
        assert_eq!(u.virtualbox(), Some("Ubuntu_64"));
        assert_eq!(Os::from_cim(94), Some(u));
        assert_eq!(Os::from_virtualbox("ubuntu_64"), Some(u));
        let jammy = Os::from_libosinfo("ubuntu22.04").unwrap();
        assert_eq!(jammy.vmware(), Some("ubuntu-64"));
        assert_eq!(jammy.cim(), Some(94));

        let w10 = Os::from_vmware("windows9-64").unwrap();
        assert_eq!(w10.libosinfo(), Some("win10"));
        assert_eq!(w10.virtualbox(), Some("Windows10_64"));
        assert_eq!(Os::from_virtualbox("Windows10_64"), Some(w10));
        assert_eq!(Os::from_libosinfo("win10").unwrap().bits(), 64);

        assert_eq!(Os::from_cim(101).unwrap().vmware(), Some("otherlinux-64"));
        assert_eq!(Os::from_cim(102).unwrap().vmware(), Some("other-64"));
        assert_eq!(Os::from_cim(103).unwrap().name(), "Windows Server 2008 R2");
        assert_eq!(
            Os::from_libosinfo("rhel8.0").unwrap().vmware(),
            Some("rhel8-64")
        );
        assert_eq!(Os::from_cim(78).unwrap().family(), OsFamily::Bsd);
        assert_eq!(Os::from_virtualbox("OpenBSD_64").unwrap().cim(), Some(65));
        assert!(Os::from_vmware("no-such-os").is_none());
        assert!(Os::from_cim(9999).is_none());
    }

    #[test]
    fn vmware_api_form_meets_vmx_form() {
        for (api, vmx) in [
            ("ubuntu64Guest", "ubuntu-64"),
            ("windows9_64Guest", "windows9-64"),
            ("otherGuest64", "other-64"),
            ("other26xLinux64Guest", "other26xlinux-64"),
            ("windows8Server64Guest", "windows8srv-64"),
            ("rhel8_64Guest", "rhel8-64"),
            ("windows2019srv_64Guest", "windows2019srv-64"),
            ("winXPProGuest", "winxppro"),
        ] {
            let os = Os::from_vmware(api).unwrap_or_else(|| panic!("{api}"));
            assert_eq!(os.vmware(), Some(vmx), "{api}");
        }
        assert_eq!(
            Os::from_vmware("ubuntu-64")
                .unwrap()
                .vmware_api()
                .as_deref(),
            Some("ubuntu64Guest")
        );
        assert_eq!(
            Os::from_vmware("rhel8-64").unwrap().vmware_api().as_deref(),
            Some("rhel8_64Guest")
        );
        assert_eq!(
            Os::from_vmware("other-64").unwrap().vmware_api().as_deref(),
            Some("otherGuest64")
        );
    }

    #[test]
    fn every_id_round_trips_to_a_row_naming_it() {
        for r in TABLE {
            let os = Os(r);
            if let Some(v) = r.vmware {
                assert_eq!(Os::from_vmware(v).unwrap().vmware(), Some(v));
                if let Some(api) = os.vmware_api() {
                    assert_eq!(Os::from_vmware(&api).unwrap().vmware(), Some(v), "{api}");
                }
            }
            if let Some(c) = r.cim {
                assert_eq!(Os::from_cim(c).unwrap().cim(), Some(c));
            }
            if let Some(v) = r.virtualbox {
                assert_eq!(Os::from_virtualbox(v).unwrap().virtualbox(), Some(v));
            }
            if let Some(l) = r.libosinfo {
                assert_eq!(Os::from_libosinfo(l).unwrap().libosinfo(), Some(l));
            }
        }
    }

    #[test]
    fn specific_ids_win_over_cim() {
        let mut g = GuestOs {
            cim_id: Some(102),
            vmware_id: Some("windows9_64Guest".into()),
            ..GuestOs::default()
        };
        g.resolve();
        assert_eq!(g.os.unwrap().name(), "Windows 10 64-bit");
        let json = serde_json::to_value(&g).unwrap();
        assert_eq!(json["os"]["libosinfo"], "win10");
    }
}
