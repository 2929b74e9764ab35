//! OVF descriptors: parsing the `.ovf` XML of an OVF folder or OVA package into a
//! [`Descriptor`] (the files and disks it references, and the [`Vm`] it describes).
//!
//! Every dialect in the wild is read: OVF 0.9 (VMware's pre-standard namespace, `Section
//! xsi:type=...`), 1.x and 2.0 (with OVF 2.0's StorageItem and EthernetPortItem), whatever
//! prefixes the writer chose (elements are matched by namespace URI), from VMware (ovftool,
//! vSphere, Workstation: `vmw:` extensions), VirtualBox (its `vbox:Machine` section), XenServer
//! (XenCenter's `xenovf:`) and Cisco/COT. Of several deployment configurations the default one
//! is read, and the descriptor says so. What a descriptor says that the VM model cannot carry
//! lands in [`Vm::warnings`].
//!
//! ```
//! let xml = br#"<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1"
//!     xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"
//!     xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData">
//!   <References><File ovf:id="f1" ovf:href="disk1.vmdk"/></References>
//!   <DiskSection><Info/>
//!     <Disk ovf:diskId="d1" ovf:fileRef="f1" ovf:capacity="8" ovf:capacityAllocationUnits="byte * 2^30"
//!       ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
//!   </DiskSection>
//!   <VirtualSystem ovf:id="vm1"><Info/>
//!     <VirtualHardwareSection><Info/>
//!       <Item><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType>
//!         <rasd:VirtualQuantity>2</rasd:VirtualQuantity></Item>
//!       <Item><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType>
//!         <rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits>
//!         <rasd:VirtualQuantity>1024</rasd:VirtualQuantity></Item>
//!       <Item><rasd:InstanceID>3</rasd:InstanceID><rasd:ResourceType>6</rasd:ResourceType>
//!         <rasd:ResourceSubType>VirtualSCSI</rasd:ResourceSubType></Item>
//!       <Item><rasd:InstanceID>4</rasd:InstanceID><rasd:ResourceType>17</rasd:ResourceType>
//!         <rasd:HostResource>ovf:/disk/d1</rasd:HostResource><rasd:Parent>3</rasd:Parent>
//!         <rasd:AddressOnParent>0</rasd:AddressOnParent></Item>
//!     </VirtualHardwareSection>
//!   </VirtualSystem>
//! </Envelope>"#;
//! let d = diskferry::ovf::parse(xml, "vm1.ovf")?;
//! assert_eq!(d.vm.name, "vm1");
//! assert_eq!((d.vm.cpus.count, d.vm.memory_bytes), (2, 1 << 30));
//! assert_eq!(d.disks[0].capacity, Some(8 << 30));
//! assert_eq!(d.vm.disks[0].controller.kind.to_string(), "SCSI (pvscsi)");
//! # Ok::<(), diskferry::Error>(())
//! ```

mod hardware;
pub mod mapping;
pub mod xml;

pub use xml::{MAX_ATTRIBUTES, MAX_DEPTH, MAX_ELEMENTS, MAX_SIZE};

use crate::error::{Error, Result};
use crate::vm::Vm;
use serde::Serialize;
use std::fmt;
use xml::{Element, Ns};

/// The largest virtual disk a descriptor may declare (1 EiB): beyond every image format's limit,
/// so a larger capacity is a damaged or hostile descriptor.
pub const MAX_CAPACITY: u64 = 1 << 60;

/// A parsed OVF descriptor.
#[derive(Debug, Clone, Serialize)]
pub struct Descriptor {
    /// The OVF version, from the envelope's namespace.
    pub version: OvfVersion,
    /// Which producer's habits the descriptor shows.
    pub dialect: Dialect,
    /// The References section: the package's files.
    pub files: Vec<FileRef>,
    /// The DiskSection: the virtual disks and their files.
    pub disks: Vec<DiskRef>,
    /// The NetworkSection's logical networks.
    pub networks: Vec<Network>,
    /// The virtual hardware family (`vmx-13`, `virtualbox-2.2`, `xen-3.0-unknown`), when given.
    pub system_type: Option<String>,
    /// The deployment configurations (DeploymentOptionSection) by id; empty when there is one.
    pub configurations: Vec<String>,
    /// The configuration whose hardware [`Descriptor::vm`] describes, when there are several.
    pub configuration: Option<String>,
    /// The ProductSection, when present.
    pub product: Option<Product>,
    /// The keys of the ProductSection properties (`ovf:Property`) of the virtual system read
    /// and of the collections around it: what the appliance expects in its OVF environment
    /// when it is deployed.
    pub properties: Vec<String>,
    /// The `ovf:id`s of the StartupSection items around the system read (the envelope's or
    /// a collection's): the start order, delays and start and stop actions of the systems,
    /// which no target is given.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub startup: Vec<String>,
    /// Whether the system read, or a collection around it, carries a license agreement
    /// (EulaSection), which an OVF deployment shows for the user to accept.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub eula: bool,
    /// The `ovf:id`s of the envelope's VirtualSystems in document order (a
    /// VirtualSystemCollection holds several); [`Descriptor::vm`] is the first's.
    pub systems: Vec<String>,
    /// The machine.
    pub vm: Vm,
    /// Facts about the package that are not the machine's (a EULA, properties, a startup
    /// order, other virtual systems of a collection), one sentence each.
    pub notes: Vec<String>,
}

impl Descriptor {
    /// The file of References with `ovf:id` `id`.
    pub fn file(&self, id: &str) -> Option<&FileRef> {
        self.files.iter().find(|f| f.id == id)
    }

    /// The disk of DiskSection with `ovf:diskId` `id`.
    pub fn disk(&self, id: &str) -> Option<&DiskRef> {
        self.disks.iter().find(|d| d.disk_id == id)
    }

    /// The file holding a disk's content, None for a disk to create empty.
    pub fn disk_file(&self, disk: &DiskRef) -> Option<&FileRef> {
        disk.file_ref.as_deref().and_then(|id| self.file(id))
    }

    /// What moving [`Descriptor::vm`] to another hypervisor leaves behind, one warning each:
    /// the other virtual systems of a collection, the deployment configurations whose
    /// hardware was not read, the ProductSection properties (no target gives the guest an
    /// OVF environment), the startup order and the license agreement (no target shows it for
    /// the user to accept). [`Descriptor::notes`] says the same for `info`, as facts.
    pub fn not_carried(&self) -> Vec<String> {
        let mut w = Vec::new();
        if let [first, others @ ..] = self.systems.as_slice()
            && !others.is_empty()
        {
            w.push(format!(
                "the package holds {} virtual systems (a VirtualSystemCollection): only the first, '{first}', is migrated; not carried: {}",
                self.systems.len(),
                quoted_list(others)
            ));
        }
        if self.configurations.len() > 1 {
            w.push(format!(
                "the descriptor offers {} deployment configurations ({}): the hardware of '{}', the default, is used; the others are not carried",
                self.configurations.len(),
                self.configurations.join(", "),
                self.configuration.as_deref().unwrap_or("")
            ));
        }
        if !self.properties.is_empty() {
            w.push(format!(
                "{} ProductSection properties ({}) are not carried: the target gives the guest no OVF environment, so what they set (addresses, passwords ...) must be set in the guest",
                self.properties.len(),
                quoted_list(&self.properties)
            ));
        }
        if !self.startup.is_empty() {
            w.push(format!(
                "the package's startup order (StartupSection, for {}) is not carried: the start order, delays and start and stop actions are the target's defaults; set them there",
                quoted_list(&self.startup)
            ));
        }
        if self.eula {
            // An OVF deployment shows the licence and stops unless it is accepted; the
            // target shows nothing.
            w.push("the package's license agreement (EulaSection) is not carried: it was neither shown nor accepted; read it in the descriptor (<License>) before using the VM".into());
        }
        w
    }
}

/// `'a', 'b', 'c'`, the first ten of a long list and how many more.
fn quoted_list(items: &[String]) -> String {
    const SHOWN: usize = 10;
    let mut s = items
        .iter()
        .take(SHOWN)
        .map(|i| format!("'{i}'"))
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > SHOWN {
        s.push_str(&format!(" and {} more", items.len() - SHOWN));
    }
    s
}

/// The OVF version of a descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum OvfVersion {
    /// VMware's pre-standard OVF 0.9.
    #[serde(rename = "0.9")]
    V0_9,
    /// DMTF OVF 1.0 and 1.1.
    #[serde(rename = "1.x")]
    V1,
    /// DMTF OVF 2.0 and 2.1.
    #[serde(rename = "2.x")]
    V2,
}

impl fmt::Display for OvfVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OvfVersion::V0_9 => "0.9",
            OvfVersion::V1 => "1.x",
            OvfVersion::V2 => "2.x",
        })
    }
}

/// The producer whose habits a descriptor shows (detected from its content).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Dialect {
    /// VMware ovftool, vSphere, Workstation, Fusion (`vmw:` extensions, `vmx-NN` systems).
    Vmware,
    /// Oracle VirtualBox (`vbox:Machine`, `virtualbox-2.2` systems).
    VirtualBox,
    /// Citrix XenServer/XenCenter, XCP-ng (`xenovf:`, `xen-3.0` systems).
    XenServer,
    /// Cisco appliances and the Common OVF Tool (COT).
    Cisco,
    /// Anything else (hand-written, oVirt, Oracle VM ...).
    Other,
}

impl fmt::Display for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dialect::Vmware => "VMware",
            Dialect::VirtualBox => "VirtualBox",
            Dialect::XenServer => "XenServer",
            Dialect::Cisco => "Cisco/COT",
            Dialect::Other => "other",
        })
    }
}

/// A file of the References section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileRef {
    /// Its `ovf:id`.
    pub id: String,
    /// Its name inside the package (`ovf:href`).
    pub href: String,
    /// Its size in bytes as stored (compressed size when compressed), when given.
    pub size: Option<u64>,
    /// Its chunk size: the file is stored as `href.000000000`, `href.000000001` ... parts.
    pub chunk_size: Option<u64>,
    /// How the file is compressed in the package.
    pub compression: Option<Compression>,
}

/// A compression of a referenced file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Compression {
    /// gzip (`ovf:compression="gzip"`).
    Gzip,
}

/// A disk of the DiskSection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiskRef {
    /// Its `ovf:diskId`.
    pub disk_id: String,
    /// The `ovf:id` of its file; None for a disk to create empty.
    pub file_ref: Option<String>,
    /// Its virtual size in bytes; None when the descriptor is an unfilled template
    /// (`${CAPACITY}`), with a warning.
    pub capacity: Option<u64>,
    /// The bytes in use, when given (`ovf:populatedSize`).
    pub populated_size: Option<u64>,
    /// The image format of its file.
    pub format: DiskFormat,
    /// The `ovf:diskId` of its parent, for a differencing disk (`ovf:parentRef`).
    pub parent_ref: Option<String>,
}

/// The image format an OVF disk's `ovf:format` URI names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DiskFormat {
    /// VMware stream-optimized VMDK (`vmdk.html#streamOptimized`, 0.9's `#compressed`).
    StreamOptimizedVmdk,
    /// VMware monolithic sparse VMDK (`vmdk.html#sparse`, `#monolithicSparse`).
    MonolithicSparseVmdk,
    /// Microsoft VHD (XenServer's `vhdspec.mspx`, VirtualBox's `LinkId=137171`).
    Vhd,
    /// Microsoft VHDX.
    Vhdx,
    /// QEMU QCOW2.
    Qcow2,
    /// Raw bytes.
    Raw,
    /// Any other URI, verbatim.
    Other(String),
}

impl DiskFormat {
    /// The format an `ovf:format` URI names.
    pub fn from_uri(uri: &str) -> DiskFormat {
        let lower = uri.trim().to_ascii_lowercase();
        let fragment = lower.rsplit_once('#').map(|(_, f)| f).unwrap_or("");
        if lower.contains("vmdk") {
            match fragment {
                "streamoptimized" | "compressed" => return DiskFormat::StreamOptimizedVmdk,
                "sparse" | "monolithicsparse" => return DiskFormat::MonolithicSparseVmdk,
                _ => {}
            }
        } else if lower.contains("vhdx") {
            return DiskFormat::Vhdx;
        } else if lower.contains("vhdspec") || lower.contains("linkid=137171") {
            return DiskFormat::Vhd;
        } else if lower.contains("qcow") {
            return DiskFormat::Qcow2;
        } else if fragment == "raw" || lower == "http://en.wikipedia.org/wiki/byte" {
            return DiskFormat::Raw;
        }
        DiskFormat::Other(uri.trim().to_string())
    }
}

/// A logical network of the NetworkSection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Network {
    /// Its name (what NICs' Connection elements name).
    pub name: String,
    /// Its description, when given.
    pub description: Option<String>,
}

/// The ProductSection: what the appliance is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Product {
    /// The product name.
    pub product: Option<String>,
    /// The vendor.
    pub vendor: Option<String>,
    /// The short version.
    pub version: Option<String>,
    /// The full version.
    pub full_version: Option<String>,
    /// The section's `ovf:class` (`com.cisco.csr1000v`), when given.
    pub class: Option<String>,
}

/// Parses an OVF descriptor. `name` names it in errors (a path, or `vm.ova:vm.ovf`).
///
/// Errors: invalid XML, a DOCTYPE with entities, more than [`MAX_SIZE`] bytes, an
/// envelope in an unknown namespace, references that do not resolve (a disk naming a missing
/// file, a disk item naming a missing disk, a device naming a missing controller), numbers that
/// are not numbers, capacities past [`MAX_CAPACITY`]; each as one error naming the descriptor
/// and the byte offset of the element at fault.
pub fn parse(bytes: &[u8], name: &str) -> Result<Descriptor> {
    let root = xml::parse(bytes, name)?;
    Reader { name }.descriptor(&root)
}

/// Interprets the element tree; holds the descriptor's name for errors.
struct Reader<'a> {
    name: &'a str,
}

impl Reader<'_> {
    fn err(&self, at: &Element, message: impl Into<String>) -> Error {
        Error::corrupt(message)
            .at_offset(at.offset)
            .with_path(self.name)
    }

    fn descriptor(&self, root: &Element) -> Result<Descriptor> {
        if root.name != "Envelope" {
            return Err(self.err(
                root,
                format!(
                    "not an OVF descriptor: the root element is <{}>, not <Envelope>",
                    root.name
                ),
            ));
        }
        let version = match root.ns_uri.as_deref() {
            Some(xml::OVF_09) => OvfVersion::V0_9,
            Some(xml::OVF_1) => OvfVersion::V1,
            Some(xml::OVF_2) => OvfVersion::V2,
            Some(other) => {
                return Err(Error::unsupported(format!(
                    "OVF envelope in unknown namespace '{other}' (known: OVF 0.9, 1.x, 2.x)"
                ))
                .at_offset(root.offset)
                .with_path(self.name));
            }
            None => {
                return Err(self.err(root, "not an OVF descriptor: <Envelope> has no namespace"));
            }
        };
        let mut notes = Vec::new();

        let files = match section(root, "References") {
            Some(refs) => refs
                .children(Ns::Ovf, "File")
                .map(|f| self.file(f))
                .collect::<Result<Vec<_>>>()?,
            None => Vec::new(),
        };
        for (i, f) in files.iter().enumerate() {
            if files[..i].iter().any(|g| g.id == f.id) {
                return Err(self.err(root, format!("References lists file id '{}' twice", f.id)));
            }
        }

        let mut disks = Vec::new();
        let mut disk_warnings = Vec::new();
        let mut bootable = Vec::new();
        if let Some(ds) = section(root, "DiskSection") {
            for d in ds.children(Ns::Ovf, "Disk") {
                let disk = self.disk(d, &files, &mut disk_warnings)?;
                if disks.iter().any(|e: &DiskRef| e.disk_id == disk.disk_id) {
                    return Err(self.err(
                        d,
                        format!("DiskSection lists disk id '{}' twice", disk.disk_id),
                    ));
                }
                // XenCenter marks the boot disk on the Disk itself.
                if d.attr(Ns::Xenovf, "isBootable").is_some_and(is_true) {
                    bootable.push(disk.disk_id.clone());
                }
                disks.push(disk);
            }
        }

        let networks = section(root, "NetworkSection")
            .map(|ns| {
                ns.children(Ns::Ovf, "Network")
                    .filter_map(|n| {
                        Some(Network {
                            name: n.ovf_attr("name")?.to_string(),
                            description: n.child_text(Ns::Ovf, "Description").map(str::to_string),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();

        // Deployment configurations: read the default one.
        let mut configurations = Vec::new();
        let mut default_config = None;
        if let Some(opts) = section(root, "DeploymentOptionSection") {
            for c in opts.children(Ns::Ovf, "Configuration") {
                if let Some(id) = c.ovf_attr("id") {
                    configurations.push(id.to_string());
                    if c.ovf_attr("default").is_some_and(is_true) && default_config.is_none() {
                        default_config = Some(id.to_string());
                    }
                }
            }
        }
        let configuration = match (&default_config, configurations.first()) {
            (Some(d), _) => Some(d.clone()),
            // DSP0243: without ovf:default, the first configuration is the default.
            (None, Some(first)) => Some(first.clone()),
            (None, None) => None,
        };
        if configurations.len() > 1 {
            notes.push(format!(
                "the descriptor offers {} deployment configurations ({}); this is the default '{}'",
                configurations.len(),
                configurations.join(", "),
                configuration.as_deref().unwrap_or("")
            ));
        }

        // The virtual system: a VirtualSystem, or the first of a VirtualSystemCollection.
        let systems = virtual_systems(root);
        let Some(system) = systems.first().copied() else {
            return Err(self.err(root, "the descriptor describes no VirtualSystem"));
        };
        for other in &systems[1..] {
            notes.push(format!(
                "the package holds another virtual system '{}', not read (one VM per descriptor)",
                other.ovf_attr("id").unwrap_or("?")
            ));
        }
        // The envelope and the collections around the system read: a StartupSection sits in
        // the collection whose systems it orders (or, as XenCenter writes it, the envelope).
        let around: Vec<&Element> = [root]
            .into_iter()
            .chain(enclosing_collections(root, system))
            .collect();
        let startup: Vec<String> = around
            .iter()
            .flat_map(|e| sections(e, "StartupSection"))
            .flat_map(|s| s.children.iter())
            .filter(|i| i.ns == Ns::Ovf && i.name == "Item")
            .map(|i| i.ovf_attr("id").unwrap_or("?").to_string())
            .collect();
        if !startup.is_empty() {
            notes.push("the package sets a startup order (StartupSection), not carried".into());
        }

        let product = section(system, "ProductSection").map(|p| Product {
            product: p.child_text(Ns::Ovf, "Product").map(str::to_string),
            vendor: p.child_text(Ns::Ovf, "Vendor").map(str::to_string),
            version: p.child_text(Ns::Ovf, "Version").map(str::to_string),
            full_version: p.child_text(Ns::Ovf, "FullVersion").map(str::to_string),
            class: p.ovf_attr("class").map(str::to_string),
        });
        // A collection's ProductSection applies to every system in it, the one read too.
        let properties: Vec<String> = enclosing_collections(root, system)
            .into_iter()
            .chain([system])
            .flat_map(|e| sections(e, "ProductSection"))
            .flat_map(property_keys)
            .collect();
        if !properties.is_empty() {
            notes.push(format!(
                "the appliance declares {} ProductSection properties (guest customization), not carried",
                properties.len()
            ));
        }
        let eula = around
            .iter()
            .chain([&system])
            .any(|e| section(e, "EulaSection").is_some());
        if eula {
            notes.push("the package carries a license agreement (EulaSection)".into());
        }

        let hw = hardware::Hardware {
            reader: self,
            files: &files,
            disks: &disks,
            bootable: &bootable,
            configuration: configuration.as_deref(),
        };
        // The disk warnings go first into the VM's warnings.
        let (mut vm, system_type) = hw.vm(system, &mut disk_warnings)?;
        if let Some(p) = &product
            && vm.description.is_none()
        {
            vm.description = p.product.clone();
        }

        let dialect = detect_dialect(root, system_type.as_deref(), product.as_ref());
        Ok(Descriptor {
            version,
            dialect,
            files,
            disks,
            networks,
            system_type,
            configurations,
            configuration,
            product,
            properties,
            startup,
            eula,
            systems: systems
                .iter()
                .map(|s| s.ovf_attr("id").unwrap_or("?").to_string())
                .collect(),
            vm,
            notes,
        })
    }

    fn file(&self, f: &Element) -> Result<FileRef> {
        let id = self.required(f, "id")?;
        let href = self.required(f, "href")?;
        check_href(href).map_err(|m| {
            Error::refused(format!("file '{id}': {m}"))
                .at_offset(f.offset)
                .with_path(self.name)
        })?;
        let size = self.optional_number(f, "size")?;
        let chunk_size = self.optional_number(f, "chunkSize")?;
        if chunk_size == Some(0) {
            return Err(self.err(f, format!("file '{id}' has ovf:chunkSize 0")));
        }
        let compression = match f.ovf_attr("compression").map(str::trim) {
            None | Some("") | Some("identity") => None,
            Some(c) if c.eq_ignore_ascii_case("gzip") => Some(Compression::Gzip),
            Some(other) => {
                return Err(Error::unsupported(format!(
                    "file '{id}' is compressed with '{other}' (only gzip is known)"
                ))
                .at_offset(f.offset)
                .with_path(self.name));
            }
        };
        Ok(FileRef {
            id: id.to_string(),
            href: href.to_string(),
            size,
            chunk_size,
            compression,
        })
    }

    fn disk(&self, d: &Element, files: &[FileRef], warnings: &mut Vec<String>) -> Result<DiskRef> {
        let disk_id = self.required(d, "diskId")?.to_string();
        let file_ref = d
            .ovf_attr("fileRef")
            .map(str::trim)
            .filter(|s| !s.is_empty());
        if let Some(f) = file_ref
            && !files.iter().any(|x| x.id == f)
        {
            return Err(self.err(
                d,
                format!("disk '{disk_id}' refers to file '{f}', which References does not list"),
            ));
        }
        // OVF 0.9 writers put the capacity in ovf:capacity; some in ovf:size.
        let raw = d
            .ovf_attr("capacity")
            .or_else(|| d.ovf_attr("size"))
            .ok_or_else(|| self.err(d, format!("disk '{disk_id}' has no ovf:capacity")))?;
        let capacity = if is_placeholder(raw) {
            warnings.push(format!(
                "disk '{disk_id}': capacity '{raw}' is an unfilled template placeholder"
            ));
            None
        } else {
            let units = d.ovf_attr("capacityAllocationUnits").unwrap_or("byte");
            let n = self.number(d, raw, "ovf:capacity")?;
            let scale = units_multiplier(units).ok_or_else(|| {
                self.err(
                    d,
                    format!("disk '{disk_id}': unknown capacity units '{units}'"),
                )
            })?;
            let bytes = n
                .checked_mul(scale)
                .filter(|b| *b <= MAX_CAPACITY)
                .ok_or_else(|| {
                    self.err(
                        d,
                        format!(
                            "disk '{disk_id}': capacity {n} x '{units}' is more than 1 EiB, past any disk format's limit"
                        ),
                    )
                })?;
            Some(bytes)
        };
        let populated_size = match d.ovf_attr("populatedSize") {
            Some(v) if is_placeholder(v) => None,
            Some(v) => Some(self.number(d, v, "ovf:populatedSize")?),
            None => None,
        };
        let format = match d.ovf_attr("format") {
            Some(f) => DiskFormat::from_uri(f),
            None => DiskFormat::Other(String::new()),
        };
        Ok(DiskRef {
            disk_id,
            file_ref: file_ref.map(str::to_string),
            capacity,
            populated_size,
            format,
            parent_ref: d.ovf_attr("parentRef").map(str::to_string),
        })
    }

    fn required<'e>(&self, e: &'e Element, attr: &str) -> Result<&'e str> {
        e.ovf_attr(attr)
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| self.err(e, format!("<{}> has no ovf:{attr}", e.name)))
    }

    fn optional_number(&self, e: &Element, attr: &str) -> Result<Option<u64>> {
        match e.ovf_attr(attr) {
            None => Ok(None),
            Some(v) if is_placeholder(v) || v.trim() == "-1" => Ok(None),
            Some(v) => self.number(e, v, &format!("ovf:{attr}")).map(Some),
        }
    }

    fn number(&self, e: &Element, text: &str, what: &str) -> Result<u64> {
        parse_u64(text).ok_or_else(|| {
            self.err(
                e,
                format!(
                    "<{}> {what} '{}' is not a whole number",
                    e.name,
                    text.trim()
                ),
            )
        })
    }
}

/// A whole number, with surrounding blanks allowed.
fn parse_u64(text: &str) -> Option<u64> {
    let t = text.trim();
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    t.parse().ok()
}

/// An unfilled template placeholder such as `${CAPACITY}`.
fn is_placeholder(v: &str) -> bool {
    let v = v.trim();
    v.starts_with("${") && v.ends_with('}')
}

fn is_true(v: &str) -> bool {
    matches!(v.trim(), "true" | "1" | "TRUE" | "True")
}

/// The multiplier a CIM programmatic unit names: `byte`, `byte * 2^30`, `byte*10^9`,
/// `MegaBytes`, `MB`, `KiloBytes`, `GigaBytes`, `GB` ... (binary multiples, as VirtualBox and
/// VMware read the named units). None for anything else.
pub fn units_multiplier(units: &str) -> Option<u64> {
    let compact: String = units.chars().filter(|c| !c.is_whitespace()).collect();
    let lower = compact.to_ascii_lowercase();
    let named = match lower.as_str() {
        "" | "byte" | "bytes" | "b" => Some(1),
        "kilobytes" | "kilobyte" | "kb" | "kib" => Some(1 << 10),
        "megabytes" | "megabyte" | "mb" | "mib" => Some(1 << 20),
        "gigabytes" | "gigabyte" | "gb" | "gib" => Some(1 << 30),
        "terabytes" | "terabyte" | "tb" | "tib" => Some(1 << 40),
        _ => None,
    };
    if named.is_some() {
        return named;
    }
    let rest = lower
        .strip_prefix("bytes")
        .or_else(|| lower.strip_prefix("byte"))?;
    let expr = rest.strip_prefix('*')?;
    let value = match expr.split_once('^') {
        Some((base, exp)) => {
            let base: u64 = base.parse().ok()?;
            let exp: u32 = exp.parse().ok()?;
            base.checked_pow(exp)?
        }
        None => expr.parse().ok()?,
    };
    (value > 0).then_some(value)
}

/// Refuses a file name that leaves the package: absolute paths, `..`, URLs.
fn check_href(href: &str) -> std::result::Result<(), String> {
    if href.contains("://") {
        return Err(format!(
            "href '{href}' is a URL; only files inside the package are read"
        ));
    }
    if href.starts_with('/') || href.starts_with('\\') || href.get(1..2) == Some(":") {
        return Err(format!(
            "href '{href}' is an absolute path, outside the package"
        ));
    }
    if href.split(['/', '\\']).any(|c| c == "..") {
        return Err(format!("href '{href}' climbs out of the package with '..'"));
    }
    if href.contains('\0') {
        return Err("href contains a NUL byte".into());
    }
    Ok(())
}

/// Child sections of `parent` named `name`: `<ovf:NameSection>` in OVF 1.x/2.x, or OVF 0.9's
/// `<ovf:Section xsi:type="ovf:Name_Type">`.
fn sections<'a>(parent: &'a Element, name: &'a str) -> impl Iterator<Item = &'a Element> {
    parent.children.iter().filter(move |c| {
        c.ns == Ns::Ovf
            && (c.name == name || (c.name == "Section" && xsi_type(c).as_deref() == Some(name)))
    })
}

fn section<'a>(parent: &'a Element, name: &'a str) -> Option<&'a Element> {
    sections(parent, name).next()
}

/// The xsi:type of a 0.9 `Section` or `Content`, without prefix and `_Type` suffix.
fn xsi_type(e: &Element) -> Option<String> {
    let t = e.attr(Ns::Xsi, "type")?;
    let local = t.rsplit_once(':').map(|(_, l)| l).unwrap_or(t);
    Some(local.strip_suffix("_Type").unwrap_or(local).to_string())
}

/// The VirtualSystems of the envelope, in document order, looking into collections.
fn virtual_systems(root: &Element) -> Vec<&Element> {
    fn walk<'a>(e: &'a Element, out: &mut Vec<&'a Element>, depth: usize) {
        for c in &e.children {
            if c.ns != Ns::Ovf {
                continue;
            }
            let kind = if c.name == "Content" {
                xsi_type(c)
            } else {
                Some(c.name.clone())
            };
            match kind.as_deref() {
                Some("VirtualSystem") => out.push(c),
                Some("VirtualSystemCollection") if depth < 8 => walk(c, out, depth + 1),
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    walk(root, &mut out, 0);
    out
}

/// The VirtualSystemCollections that hold `system`, outermost first.
fn enclosing_collections<'a>(root: &'a Element, system: &Element) -> Vec<&'a Element> {
    fn walk<'a>(
        e: &'a Element,
        system: &Element,
        path: &mut Vec<&'a Element>,
        depth: usize,
    ) -> bool {
        for c in &e.children {
            if std::ptr::eq(c, system) {
                return true;
            }
            let collection = c.ns == Ns::Ovf
                && (c.name == "VirtualSystemCollection"
                    || (c.name == "Content"
                        && xsi_type(c).as_deref() == Some("VirtualSystemCollection")));
            if collection && depth < 8 {
                path.push(c);
                if walk(c, system, path, depth + 1) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = Vec::new();
    walk(root, system, &mut path, 0);
    path
}

/// The `ovf:key` of each property of a ProductSection (`?` for one without a key).
fn property_keys(section: &Element) -> impl Iterator<Item = String> + '_ {
    section
        .children(Ns::Ovf, "Property")
        .map(|p| p.ovf_attr("key").unwrap_or("?").to_string())
}

fn has_ns(e: &Element, ns: Ns, depth: usize) -> bool {
    e.ns == ns
        || e.attrs.iter().any(|a| a.ns == ns)
        || (depth < 16 && e.children.iter().any(|c| has_ns(c, ns, depth + 1)))
}

fn detect_dialect(root: &Element, system_type: Option<&str>, product: Option<&Product>) -> Dialect {
    let st = system_type.unwrap_or("").to_ascii_lowercase();
    if has_ns(root, Ns::Xenovf, 0) || st.starts_with("xen") {
        return Dialect::XenServer;
    }
    if has_ns(root, Ns::Vbox, 0) || st.starts_with("virtualbox") {
        return Dialect::VirtualBox;
    }
    if let Some(p) = product {
        let cisco = |s: &Option<String>| {
            s.as_deref()
                .is_some_and(|v| v.to_ascii_lowercase().contains("cisco"))
        };
        if cisco(&p.vendor) || cisco(&p.product) || cisco(&p.class) {
            return Dialect::Cisco;
        }
    }
    if has_ns(root, Ns::Vmw, 0) || st.split([' ', ',']).any(|t| t.starts_with("vmx-")) {
        return Dialect::Vmware;
    }
    Dialect::Other
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(units_multiplier("byte * 2^30"), Some(1 << 30));
        assert_eq!(units_multiplier("byte*2^20"), Some(1 << 20));
        assert_eq!(units_multiplier("MegaBytes"), Some(1 << 20));
        assert_eq!(units_multiplier("MB"), Some(1 << 20));
        assert_eq!(units_multiplier("GigaBytes"), Some(1 << 30));
        assert_eq!(units_multiplier("byte * 10^3"), Some(1000));
        assert_eq!(units_multiplier("byte"), Some(1));
        assert_eq!(units_multiplier("byte * 2^99"), None);
        assert_eq!(units_multiplier("furlongs"), None);
    }

    #[test]
    fn formats() {
        use DiskFormat::*;
        let so = "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized";
        assert_eq!(DiskFormat::from_uri(so), StreamOptimizedVmdk);
        assert_eq!(
            DiskFormat::from_uri("http://www.vmware.com/specifications/vmdk.html#sparse"),
            MonolithicSparseVmdk
        );
        assert_eq!(
            DiskFormat::from_uri(
                "http://www.microsoft.com/technet/virtualserver/downloads/vhdspec.mspx"
            ),
            Vhd
        );
        assert_eq!(
            DiskFormat::from_uri("http://go.microsoft.com/fwlink/?LinkId=137171"),
            Vhd
        );
        assert_eq!(DiskFormat::from_uri("urn:x"), Other("urn:x".into()));
    }

    #[test]
    fn hrefs() {
        assert!(check_href("disk1.vmdk").is_ok());
        assert!(check_href("sub/disk1.vmdk").is_ok());
        assert!(check_href("../disk1.vmdk").is_err());
        assert!(check_href("/etc/passwd").is_err());
        assert!(check_href("C:\\x.vmdk").is_err());
        assert!(check_href("http://example.com/x.vmdk").is_err());
    }
}
