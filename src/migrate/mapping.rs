//! The device mapping of every `migrate` pair, as data a reader can audit.
//!
//! Every source is first read into the VM model ([`crate::vm::Vm`]), and every target is
//! written from it. So each reader keeps one [`SourceMapping`] (what its native controllers,
//! NIC models and firmware settings become in the model) and each writer one
//! [`TargetMapping`] (what each model value becomes on the target, for which guests, with the
//! warning that tells what the guest will need). The writers look their decisions up in these
//! tables; a pair's mapping is the source's row composed with the target's
//! ([`pair_markdown`]), and `docs/device-mapping.md` is every pair's table, generated from
//! them ([`document`]).
//!
//! Rows are looked up first match first: a row for a given model value and guest family comes
//! before the row for any value or any guest.

use crate::vm::{ControllerKind, Firmware, NicModel, OsFamily, ScsiModel, Vm};
use std::fmt::{self, Write as _};

/// The guests a target row applies to, by the family of their operating system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guest {
    /// Every guest, whatever its system (and an unknown one).
    Any,
    /// Linux guests.
    Linux,
    /// Linux and BSD guests (virtio drivers in the kernel).
    LinuxOrBsd,
    /// Windows guests.
    Windows,
}

impl Guest {
    /// True when a guest of `family` (None: not known) is one of these.
    pub fn matches(self, family: Option<OsFamily>) -> bool {
        match self {
            Guest::Any => true,
            Guest::Linux => family == Some(OsFamily::Linux),
            Guest::LinuxOrBsd => matches!(family, Some(OsFamily::Linux | OsFamily::Bsd)),
            Guest::Windows => family == Some(OsFamily::Windows),
        }
    }
}

impl fmt::Display for Guest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Guest::Any => "any",
            Guest::Linux => "Linux",
            Guest::LinuxOrBsd => "Linux, BSD",
            Guest::Windows => "Windows",
        })
    }
}

/// The model controllers a target row is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bus {
    /// This kind exactly.
    Is(ControllerKind),
    /// Any SCSI controller, whatever its model.
    AnyScsi,
    /// Every controller.
    Any,
}

impl Bus {
    /// True when a controller of `kind` is one of these.
    pub fn matches(self, kind: ControllerKind) -> bool {
        match self {
            Bus::Is(k) => k == kind,
            Bus::AnyScsi => matches!(kind, ControllerKind::Scsi(_)),
            Bus::Any => true,
        }
    }
}

impl fmt::Display for Bus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Bus::Is(k) => write!(f, "{k}"),
            Bus::AnyScsi => f.write_str("SCSI (any model)"),
            Bus::Any => f.write_str("any"),
        }
    }
}

/// The model NICs a target row is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Adapter {
    /// This model exactly.
    Is(NicModel),
    /// Every model.
    Any,
}

impl Adapter {
    /// True when a NIC of `model` is one of these.
    pub fn matches(&self, model: &NicModel) -> bool {
        match self {
            Adapter::Is(m) => m == model,
            Adapter::Any => true,
        }
    }
}

impl fmt::Display for Adapter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Adapter::Is(m) => write!(f, "{m}"),
            Adapter::Any => f.write_str("any"),
        }
    }
}

/// The model's firmware settings, as table keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Boot {
    /// Legacy BIOS.
    Bios,
    /// UEFI without Secure Boot.
    Uefi,
    /// UEFI with Secure Boot.
    SecureBoot,
    /// A virtual TPM on a UEFI machine.
    TpmUefi,
    /// A virtual TPM on a BIOS machine.
    TpmBios,
}

impl Boot {
    /// The key of a firmware.
    pub fn of(firmware: Firmware) -> Boot {
        match firmware {
            Firmware::Bios => Boot::Bios,
            Firmware::Uefi { secure_boot: false } => Boot::Uefi,
            Firmware::Uefi { secure_boot: true } => Boot::SecureBoot,
        }
    }

    /// The key of `vm`'s TPM, when it has one.
    pub fn tpm_of(vm: &Vm) -> Option<Boot> {
        vm.tpm.then_some(match vm.firmware {
            Firmware::Bios => Boot::TpmBios,
            Firmware::Uefi { .. } => Boot::TpmUefi,
        })
    }

    /// Every key, in the order the tables list them.
    pub const ALL: [Boot; 5] = [
        Boot::Bios,
        Boot::Uefi,
        Boot::SecureBoot,
        Boot::TpmUefi,
        Boot::TpmBios,
    ];
}

impl fmt::Display for Boot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Boot::Bios => "BIOS",
            Boot::Uefi => "UEFI",
            Boot::SecureBoot => "UEFI (Secure Boot)",
            Boot::TpmUefi => "TPM (UEFI machine)",
            Boot::TpmBios => "TPM (BIOS machine)",
        })
    }
}

/// One decision of a writer: model value `model`, for guests `guest`, becomes `target`.
#[derive(Debug, Clone)]
pub struct Row<K: 'static> {
    /// The guests the row is for.
    pub guest: Guest,
    /// The model value(s).
    pub model: K,
    /// What the target gets, in its own terms (`virtio`, `lsisas1068`, `bios: ovmf`).
    pub target: &'static str,
    /// What the guest will need, or what is lost, when the row applies (None: nothing).
    pub warning: Option<&'static str>,
    /// Where the rule comes from: a documentation URL or a `packages.md` section.
    pub cite: &'static str,
}

/// A row, spelled shortly (the tables are long).
pub const fn row<K>(
    guest: Guest,
    model: K,
    target: &'static str,
    warning: Option<&'static str>,
    cite: &'static str,
) -> Row<K> {
    Row {
        guest,
        model,
        target,
        warning,
        cite,
    }
}

/// A writer's decisions: one table per kind of device.
#[derive(Debug)]
pub struct TargetMapping {
    /// The `--to` names it writes (the first is the one shown).
    pub names: &'static [&'static str],
    /// Storage controllers.
    pub controllers: &'static [Row<Bus>],
    /// NIC models.
    pub nics: &'static [Row<Adapter>],
    /// Firmware, Secure Boot and TPM.
    pub firmware: &'static [Row<Boot>],
    /// What the guest will need on the target, by its system, when that is not one
    /// device's doing (cloud targets choose the devices themselves).
    pub guest: &'static [Row<()>],
    /// The guest OS id the target gets, and what it is taken from.
    pub os: &'static str,
    /// What the tables cannot say (placement rules, decisions over the whole machine).
    pub notes: &'static str,
}

fn family(vm: &Vm) -> Option<OsFamily> {
    vm.guest_os.os.map(|o| o.family())
}

impl TargetMapping {
    /// The row for a controller of `kind` in `vm`.
    pub fn controller(&self, kind: ControllerKind, vm: &Vm) -> Option<&'static Row<Bus>> {
        self.controller_for(kind, family(vm))
    }

    /// The row for a controller of `kind` in a guest of `family`.
    pub fn controller_for(
        &self,
        kind: ControllerKind,
        family: Option<OsFamily>,
    ) -> Option<&'static Row<Bus>> {
        self.controllers
            .iter()
            .find(|r| r.model.matches(kind) && r.guest.matches(family))
    }

    /// The row for a NIC of `model` in `vm`.
    pub fn nic(&self, model: &NicModel, vm: &Vm) -> Option<&'static Row<Adapter>> {
        self.nic_for(model, family(vm))
    }

    /// The row for a NIC of `model` in a guest of `family`.
    pub fn nic_for(
        &self,
        model: &NicModel,
        family: Option<OsFamily>,
    ) -> Option<&'static Row<Adapter>> {
        self.nics
            .iter()
            .find(|r| r.model.matches(model) && r.guest.matches(family))
    }

    /// The row for a firmware key in a guest of `family`.
    pub fn boot_for(&self, key: Boot, family: Option<OsFamily>) -> Option<&'static Row<Boot>> {
        self.firmware
            .iter()
            .find(|r| r.model == key && r.guest.matches(family))
    }

    /// The row for `vm`'s firmware.
    pub fn boot(&self, vm: &Vm) -> Option<&'static Row<Boot>> {
        self.boot_for(Boot::of(vm.firmware), family(vm))
    }

    /// The row of what a guest of `family` needs.
    pub fn needs_for(&self, family: Option<OsFamily>) -> Option<&'static Row<()>> {
        self.guest.iter().find(|r| r.guest.matches(family))
    }

    /// The row of what `vm`'s guest needs.
    pub fn needs(&self, vm: &Vm) -> Option<&'static Row<()>> {
        self.needs_for(family(vm))
    }

    /// The row for `vm`'s TPM, when it has one.
    pub fn tpm(&self, vm: &Vm) -> Option<&'static Row<Boot>> {
        Boot::tpm_of(vm).and_then(|k| self.boot_for(k, family(vm)))
    }
}

/// One decision of a reader: the source's `native` setting becomes the model's `model`.
#[derive(Debug, Clone)]
pub struct ReadRow<K: 'static> {
    /// The setting as the source writes it (`virtualDev = "pvscsi"`, `model type='virtio'`).
    pub native: &'static str,
    /// The model value it is read as.
    pub model: K,
    /// Where the meaning comes from: a documentation URL or a `packages.md` section.
    pub cite: &'static str,
}

/// A read row, spelled shortly.
pub const fn read<K>(native: &'static str, model: K, cite: &'static str) -> ReadRow<K> {
    ReadRow {
        native,
        model,
        cite,
    }
}

/// A reader's decisions.
#[derive(Debug)]
pub struct SourceMapping {
    /// The names `--from` takes for it (the first is the one shown).
    pub names: &'static [&'static str],
    /// The source kinds it reads (as tests/matrix.rs names them).
    pub kinds: &'static str,
    /// Storage controllers.
    pub controllers: &'static [ReadRow<ControllerKind>],
    /// NIC models.
    pub nics: &'static [ReadRow<NicModel>],
    /// NICs of a model the VM model has no variant for, read as [`NicModel::Other`] with this
    /// name.
    pub other_nics: &'static [ReadRow<&'static str>],
    /// Firmware, Secure Boot and TPM.
    pub firmware: &'static [ReadRow<Boot>],
    /// Where the guest OS comes from.
    pub os: &'static str,
}

impl SourceMapping {
    /// The model NIC of a native token (the part of a row's setting in backquotes, compared
    /// exactly: a reader of a case-insensitive format lowercases first), or None.
    pub fn nic_named(&self, token: &str) -> Option<NicModel> {
        self.nics
            .iter()
            .find(|r| native_token(r.native) == token)
            .map(|r| r.model.clone())
    }

    /// The model controller of a native token, or None.
    pub fn controller_named(&self, token: &str) -> Option<ControllerKind> {
        self.controllers
            .iter()
            .find(|r| native_token(r.native) == token)
            .map(|r| r.model)
    }
}

/// The token of a native setting: the part in backquotes when it has one, else all of it.
fn native_token(native: &str) -> &str {
    native
        .split('`')
        .nth(1)
        .filter(|_| native.contains('`'))
        .unwrap_or(native)
}

/// Every model controller kind, for tables over all of them.
pub const ALL_CONTROLLERS: [ControllerKind; 9] = [
    ControllerKind::Ide,
    ControllerKind::Sata,
    ControllerKind::Nvme,
    ControllerKind::VirtioBlk,
    ControllerKind::Scsi(ScsiModel::LsiLogic),
    ControllerKind::Scsi(ScsiModel::LsiSas),
    ControllerKind::Scsi(ScsiModel::Pvscsi),
    ControllerKind::Scsi(ScsiModel::BusLogic),
    ControllerKind::Scsi(ScsiModel::VirtioScsi),
];

/// The guest columns of a pair's table.
const COLUMNS: [(&str, Option<OsFamily>); 4] = [
    ("Linux guest", Some(OsFamily::Linux)),
    ("BSD guest", Some(OsFamily::Bsd)),
    ("Windows guest", Some(OsFamily::Windows)),
    ("other or unknown guest", None),
];

/// Table cells cannot hold a `|` or a line break.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// Warnings of one table, numbered as they first appear.
#[derive(Default)]
struct Notes(Vec<&'static str>);

impl Notes {
    fn mark(&mut self, target: &str, warning: Option<&'static str>) -> String {
        match warning {
            None => cell(target),
            Some(w) => {
                let n = match self.0.iter().position(|x| *x == w) {
                    Some(i) => i + 1,
                    None => {
                        self.0.push(w);
                        self.0.len()
                    }
                };
                format!("{} [{n}]", cell(target))
            }
        }
    }

    fn write(&self, out: &mut String) {
        if self.0.is_empty() {
            return;
        }
        out.push('\n');
        for (i, w) in self.0.iter().enumerate() {
            let _ = writeln!(out, "- [{}] {}", i + 1, cell(w));
        }
    }
}

fn header(out: &mut String, first: &[&str]) {
    let mut cols: Vec<&str> = first.to_vec();
    cols.extend(COLUMNS.iter().map(|(n, _)| *n));
    let _ = writeln!(out, "| {} |", cols.join(" | "));
    let _ = writeln!(out, "|{}", "---|".repeat(cols.len()));
}

fn missing() -> &'static str {
    "(not written)"
}

/// The table of one pair: each of the source's settings, the model value it is read as and
/// what it becomes on the target for each kind of guest, with the warnings given.
pub fn pair_markdown(source: &SourceMapping, target: &TargetMapping) -> String {
    let mut out = String::new();
    let mut notes = Notes::default();
    header(&mut out, &["source", "model"]);
    for r in source.controllers {
        let mut cells = vec![cell(r.native), r.model.to_string()];
        for (_, fam) in COLUMNS {
            cells.push(match target.controller_for(r.model, fam) {
                Some(t) => notes.mark(t.target, t.warning),
                None => missing().into(),
            });
        }
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    }
    for r in source.nics {
        let mut cells = vec![cell(r.native), format!("NIC {}", r.model)];
        for (_, fam) in COLUMNS {
            cells.push(match target.nic_for(&r.model, fam) {
                Some(t) => notes.mark(t.target, t.warning),
                None => missing().into(),
            });
        }
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    }
    for r in source.other_nics {
        let model = NicModel::Other(r.model.to_string());
        let mut cells = vec![cell(r.native), format!("NIC {}", r.model)];
        for (_, fam) in COLUMNS {
            cells.push(match target.nic_for(&model, fam) {
                Some(t) => notes.mark(t.target, t.warning),
                None => missing().into(),
            });
        }
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    }
    for r in source.firmware {
        let mut cells = vec![cell(r.native), r.model.to_string()];
        for (_, fam) in COLUMNS {
            cells.push(match target.boot_for(r.model, fam) {
                Some(t) => notes.mark(t.target, t.warning),
                None => "(nothing written)".into(),
            });
        }
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    }
    if !target.guest.is_empty() {
        let mut cells = vec!["(any)".to_string(), "guest drivers".to_string()];
        for (_, fam) in COLUMNS {
            cells.push(match target.needs_for(fam) {
                Some(t) => notes.mark(t.target, t.warning),
                None => "".into(),
            });
        }
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    }
    let _ = writeln!(
        out,
        "| {} | guest OS | {} | | | |",
        cell(source.os),
        cell(target.os)
    );
    notes.write(&mut out);
    if !target.notes.is_empty() {
        let _ = writeln!(out, "\n{}", target.notes);
    }
    out
}

/// A source's own table, with where each reading comes from.
fn source_markdown(s: &SourceMapping, out: &mut String) {
    let _ = writeln!(out, "| setting | model | source |\n|---|---|---|");
    for r in s.controllers {
        let _ = writeln!(out, "| {} | {} | {} |", cell(r.native), r.model, r.cite);
    }
    for r in s.nics {
        let _ = writeln!(out, "| {} | NIC {} | {} |", cell(r.native), r.model, r.cite);
    }
    for r in s.other_nics {
        let _ = writeln!(out, "| {} | NIC {} | {} |", cell(r.native), r.model, r.cite);
    }
    for r in s.firmware {
        let _ = writeln!(out, "| {} | {} | {} |", cell(r.native), r.model, r.cite);
    }
    let _ = writeln!(out, "| guest OS | {} | |", cell(s.os));
}

/// A target's own table, with where each rule comes from.
fn target_markdown(t: &TargetMapping, out: &mut String) {
    let _ = writeln!(
        out,
        "| model | guest | target | warning | source |\n|---|---|---|---|---|"
    );
    let line = |out: &mut String, model: String, r: (Guest, &str, Option<&str>, &str)| {
        let _ = writeln!(
            out,
            "| {model} | {} | {} | {} | {} |",
            r.0,
            cell(r.1),
            cell(r.2.unwrap_or("")),
            r.3
        );
    };
    for r in t.controllers {
        line(
            out,
            r.model.to_string(),
            (r.guest, r.target, r.warning, r.cite),
        );
    }
    for r in t.nics {
        line(
            out,
            format!("NIC {}", r.model),
            (r.guest, r.target, r.warning, r.cite),
        );
    }
    for r in t.firmware {
        line(
            out,
            r.model.to_string(),
            (r.guest, r.target, r.warning, r.cite),
        );
    }
    for r in t.guest {
        line(
            out,
            "guest drivers".into(),
            (r.guest, r.target, r.warning, r.cite),
        );
    }
    let _ = writeln!(out, "| guest OS | any | {} | | |", cell(t.os));
    if !t.notes.is_empty() {
        let _ = writeln!(out, "\n{}", t.notes);
    }
}

/// Every reader's table, in the order `--from` lists them.
pub fn sources() -> Vec<&'static SourceMapping> {
    vec![
        &super::describe::MAPPING,
        &crate::vmconfig::vmx::mapping::READ,
        &crate::vmconfig::vbox::mapping::READ,
        &crate::vmconfig::vmc::mapping::READ,
        &crate::vmconfig::hyperv::mapping::READ,
        &crate::vmconfig::libvirt::mapping::READ,
        &crate::vmconfig::xl::mapping::READ,
        &crate::vmconfig::proxmox::mapping::READ,
        &crate::ovf::mapping::READ,
        &crate::xva::mapping::READ,
    ]
}

/// Every writer's table: the package targets, then each configuration format's.
pub fn targets() -> Vec<&'static TargetMapping> {
    let mut out: Vec<&'static TargetMapping> = vec![
        &crate::ova::mapping::VMWARE,
        &crate::ova::mapping::VIRTUALBOX,
        &crate::xva::mapping::WRITE,
        &crate::ova::mapping::XENSERVER,
        &super::DISKS,
    ];
    for c in crate::vmconfig::CONFIGS {
        if let Some(m) = c.mapping()
            && !out.iter().any(|t| std::ptr::eq(*t, m))
        {
            out.push(m);
        }
    }
    out
}

/// The reader `--from name` names.
pub fn source_named(name: &str) -> Option<&'static SourceMapping> {
    sources()
        .into_iter()
        .find(|s| s.names.iter().any(|n| n.eq_ignore_ascii_case(name)))
}

/// The writer `--to name` names (`xenserver.ova` for XenCenter's OVA).
pub fn target_named(name: &str) -> Option<&'static TargetMapping> {
    targets()
        .into_iter()
        .find(|t| t.names.iter().any(|n| n.eq_ignore_ascii_case(name)))
}

/// The names `--from` and `--to` take, for messages.
pub fn names() -> (Vec<&'static str>, Vec<&'static str>) {
    (
        sources().iter().map(|s| s.names[0]).collect(),
        targets().iter().map(|t| t.names[0]).collect(),
    )
}

/// The whole audit document: how to read it, every reader's and writer's table with its
/// sources, and every pair's composed table.
pub fn document() -> String {
    let mut out = String::new();
    out.push_str("# Device mapping of every `migrate` pair\n\n");
    out.push_str("<!-- Generated from the mapping tables in the code (src/**/mapping.rs, src/migrate/describe.rs). Do not edit: tests/mapping.rs fails when this file differs from what the tables give; regenerate with `DISKFERRY_BLESS=1 cargo test --release --test mapping`. -->\n\n");
    out.push_str(
        "Every source is read into diskferry's VM model, and every target is written from it, so\n",
    );
    out.push_str(
        "a pair's mapping is the source's row (what its setting is read as) composed with the\n",
    );
    out.push_str(
        "target's row (what the model value becomes there, for which guest). The writers take\n",
    );
    out.push_str("their decisions from the same tables. `diskferry migrate --show-mapping --from SOURCE --to TARGET`\n");
    out.push_str("prints one pair's table. A numbered note is a warning `migrate` gives when the row applies.\n\n");
    let (s, t) = names();
    let _ = writeln!(out, "Sources (`--from`): {}.\n", s.join(", "));
    let _ = writeln!(out, "Targets (`--to`): {}.\n", t.join(", "));
    out.push_str("## Sources\n\n");
    for src in sources() {
        let _ = writeln!(
            out,
            "### Source `{}` ({})\n",
            src.names.join("`, `"),
            src.kinds
        );
        source_markdown(src, &mut out);
        out.push('\n');
    }
    out.push_str("## Targets\n\n");
    for tgt in targets() {
        let _ = writeln!(out, "### Target `{}`\n", tgt.names.join("`, `"));
        target_markdown(tgt, &mut out);
        out.push('\n');
    }
    out.push_str("## Pairs\n\n");
    for src in sources() {
        for tgt in targets() {
            let _ = writeln!(out, "### {} → {}\n", src.names[0], tgt.names[0]);
            out.push_str(&pair_markdown(src, tgt));
            out.push('\n');
        }
    }
    out.trim_end().to_string() + "\n"
}
