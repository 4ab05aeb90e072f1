//! Checking and unpacking uploaded source archives (`.tar.gz`).
//!
//! Uploads come from users, so the archive is treated as hostile: every entry
//! is validated before anything is written, nothing may land outside the
//! destination directory (not through `..`, absolute paths, symlinks or hard
//! links), special files are refused, and both the unpacked size and the
//! number of entries are capped so that a small upload cannot fill the disk or
//! exhaust memory.
//!
//! [`inspect`] runs every check without writing anything; [`extract`] runs the
//! same checks and writes the tree, removing it again if anything fails. Both
//! are blocking and are meant to be called from `spawn_blocking`.

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

use flate2::read::MultiGzDecoder;
use tar::EntryType;

/// Most entries (files, directories and links) an archive may hold.
pub const MAX_FILES: u32 = 100_000;

/// The two bytes every gzip stream starts with.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// Tar block size; entry data is padded to a multiple of it.
const BLOCK: u64 = 512;
/// Decompressed bytes allowed around one entry beyond its data: its headers,
/// GNU long names, pax records and padding. The tar crate reads long names and
/// pax records into memory, so without this cap a tiny upload could claim a
/// multi-gigabyte "file name".
const METADATA_ALLOWANCE: u64 = 1 << 20;
/// Longest single file name most Unix file systems accept.
const MAX_NAME_BYTES: usize = 255;
/// Longest entry path or link target; leaves room for the destination prefix
/// within `PATH_MAX` (4096) so writes cannot fail with `ENAMETOOLONG`.
const MAX_PATH_BYTES: usize = 3072;
/// Symlinks followed while resolving one link, as Linux does (`MAXSYMLINKS`).
const MAX_LINK_HOPS: u32 = 40;
/// Total work (resolution steps, lookups weighted by path length) allowed for
/// resolving all symlinks, so chains of long links cannot pin a CPU for long.
/// A real tree uses a small fraction of it.
const MAX_LINK_WORK: u64 = 10_000_000;
/// Longest path shown in an error message.
const MAX_SHOWN_CHARS: usize = 200;

/// What an accepted archive holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchiveSummary {
    /// Distinct paths in the tree: files, links and directories, including
    /// directories the archive only implies through deeper paths.
    pub files: u32,
    /// Sum of the sizes the archive declares for its entries.
    pub unpacked_bytes: u64,
}

/// Why an archive was refused, or why it could not be processed.
///
/// Every variant except [`ArchiveError::Io`] describes a problem with the
/// upload itself, and its message tells the user how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The upload does not start like a gzip stream.
    #[error("the upload is not a gzip-compressed tar archive (make one with `tar czf app.tar.gz -C DIR .`)")]
    NotGzip,
    /// The gzip stream or the tar data inside it is damaged.
    #[error("the archive is damaged: {0} (re-create it with `tar czf app.tar.gz -C DIR .` and upload it again)")]
    Corrupt(String),
    /// An entry path is absolute, contains `..`, or cannot be stored.
    #[error(
        "the archive entry `{path}` has a path that is not allowed: paths must be relative, without `..`, \
         with names of at most 255 bytes (create the archive from inside the directory with `tar czf app.tar.gz -C DIR .`)"
    )]
    UnsafePath {
        /// The entry path as stored in the archive.
        path: String,
    },
    /// A symlink or hard link points outside the archive's tree.
    #[error(
        "the link `{path}` points to `{target}`, which is outside the uploaded directory; \
         links must stay inside it (replace the link with a copy of what it points to)"
    )]
    LinkEscapes {
        /// The link's own path.
        path: String,
        /// Where it points, as stored in the archive.
        target: String,
    },
    /// An entry is a device file, FIFO or another kind we do not unpack.
    #[error(
        "the archive entry `{path}` is a {kind}; only regular files, directories and links are allowed \
         (remove it from the directory before archiving)"
    )]
    UnsupportedEntry {
        /// The entry path.
        path: String,
        /// What kind of entry it is, in words.
        kind: String,
    },
    /// An entry would replace an earlier one or be written inside a file or
    /// through a symlink.
    #[error(
        "the archive entry `{path}` clashes with the earlier entry `{earlier}`: a path may appear only once \
         and nothing may be placed inside a file or a symbolic link (re-create the archive from a plain directory \
         with `tar czf app.tar.gz -C DIR .`)"
    )]
    Conflict {
        /// The entry that was refused.
        path: String,
        /// The earlier entry it collides with (may equal `path`).
        earlier: String,
    },
    /// The entries add up to more than the allowed unpacked size.
    #[error(
        "the archive unpacks to more than {}; leave out build output and dependencies \
         (such as `target/` or `node_modules/`) and upload it again",
        size_text(*limit)
    )]
    TooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// The archive holds more entries than allowed.
    #[error(
        "the archive holds more than {limit} files and directories; leave out build output and dependencies \
         (such as `target/` or `node_modules/`) and upload it again"
    )]
    TooManyFiles {
        /// The limit on entries.
        limit: u32,
    },
    /// Reading the upload or writing the tree failed on our side.
    #[error("could not process the archive: {0}")]
    Io(#[from] io::Error),
}

impl ArchiveError {
    /// True when the archive itself is bad (report as `INVALID_ARGUMENT`),
    /// false for I/O trouble on our side.
    pub fn is_invalid_input(&self) -> bool {
        !matches!(self, Self::Io(_))
    }
}

/// Reads the whole archive and checks every entry, writing nothing.
pub fn inspect(archive: &Path, max_unpacked_bytes: u64) -> Result<ArchiveSummary, ArchiveError> {
    walk(archive, None, Limits::new(max_unpacked_bytes))
}

/// Checks and extracts into `dest`, which must not exist yet (it is created,
/// along with missing parents). On any error `dest` is removed entirely, so a
/// bad archive leaves nothing behind.
///
/// File modes keep their permission bits (so scripts stay executable) but
/// never setuid, setgid or sticky; directories get default permissions;
/// ownership and modification times are not restored.
pub fn extract(archive: &Path, dest: &Path, max_unpacked_bytes: u64) -> Result<ArchiveSummary, ArchiveError> {
    extract_with(archive, dest, Limits::new(max_unpacked_bytes))
}

/// Caps on what an archive may hold; separate from the public functions so
/// tests can use small values.
#[derive(Debug, Clone, Copy)]
struct Limits {
    bytes: u64,
    files: u32,
}

impl Limits {
    fn new(bytes: u64) -> Self {
        Self { bytes, files: MAX_FILES }
    }
}

fn extract_with(archive: &Path, dest: &Path, limits: Limits) -> Result<ArchiveSummary, ArchiveError> {
    if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent)?;
    }
    // `create_dir` fails if `dest` exists, so we never write into, or clean up,
    // a directory that is not ours.
    fs::create_dir(dest)?;
    let result = walk(archive, Some(dest), limits);
    if result.is_err()
        && let Err(err) = fs::remove_dir_all(dest)
    {
        tracing::warn!(dest = %dest.display(), error = %err, "could not remove a partly extracted archive");
    }
    result
}

/// Reads every entry, validates it against the tree built so far and, with a
/// `dest`, writes it. Sharing one loop keeps `inspect` and `extract` in step.
fn walk(archive_path: &Path, dest: Option<&Path>, limits: Limits) -> Result<ArchiveSummary, ArchiveError> {
    let stream = Rc::new(Stream::new());
    let source = Source { file: open_gzip(archive_path)?, stream: Rc::clone(&stream) };
    let budgeted = Budgeted { inner: MultiGzDecoder::new(source), stream: Rc::clone(&stream) };
    let mut archive = tar::Archive::new(budgeted);
    let mut tree = Tree::default();
    let mut writer = dest.map(Writer::new);
    let too_many = || ArchiveError::TooManyFiles { limit: limits.files };
    let mut summary = ArchiveSummary { files: 0, unpacked_bytes: 0 };
    // Entries that add no path (pax globals, repeated directories) are
    // harmless but still cost parsing work, so they are capped too, loosely
    // enough that a tree under the file cap always fits.
    let max_entries = u64::from(limits.files) * 2;
    let mut entries_seen: u64 = 0;

    for entry in archive.entries().map_err(|e| stream.read_error(e))? {
        let mut entry = entry.map_err(|e| stream.read_error(e))?;
        entries_seen += 1;
        if entries_seen > max_entries {
            return Err(too_many());
        }
        // Checked before any data is read, so an oversized entry is never
        // decompressed.
        let size = entry.size();
        summary.unpacked_bytes = summary
            .unpacked_bytes
            .checked_add(size)
            .filter(|total| *total <= limits.bytes)
            .ok_or(ArchiveError::TooLarge { limit: limits.bytes })?;
        stream.allow_entry(size);

        let plan = tree.admit(&entry)?;
        // Implied parent directories count as well: they cost inodes and
        // memory just like explicit ones.
        summary.files =
            u32::try_from(tree.nodes.len()).ok().filter(|files| *files <= limits.files).ok_or_else(too_many)?;
        if let Some(writer) = writer.as_mut() {
            writer.write(&plan, &mut entry, size, &stream)?;
        }
    }

    // Symlinks are resolved through each other only now that the whole tree
    // is known: `b -> a/..` may come before `a -> .`.
    tree.check_all_links()?;

    // Read to the end of the gzip stream so its CRC and length are verified;
    // the tar parser stops at the end-of-archive marker.
    io::copy(&mut archive.into_inner(), &mut io::sink()).map_err(|e| stream.read_error(e))?;
    Ok(summary)
}

/// Opens the upload and checks that it starts like gzip, so the user gets a
/// clear "not a tar.gz" instead of a decoder error.
fn open_gzip(path: &Path) -> Result<File, ArchiveError> {
    let mut file = File::open(path)?;
    let mut magic = [0u8; 2];
    match file.read_exact(&mut magic) {
        Ok(()) if magic == GZIP_MAGIC => {}
        Ok(()) => return Err(ArchiveError::NotGzip),
        Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => {
            return Err(ArchiveError::NotGzip);
        }
        Err(err) => return Err(err.into()),
    }
    file.rewind()?;
    Ok(file)
}

/// Bookkeeping shared between the reader layers (owned by the tar crate) and
/// the entry loop.
struct Stream {
    /// Decompressed bytes handed to the tar parser so far.
    consumed: Cell<u64>,
    /// How far `consumed` may go before the archive counts as a bomb.
    allowed: Cell<u64>,
    /// Set when `allowed` was exceeded.
    over_budget: Cell<bool>,
    /// An error from reading the upload file itself, kept here because the
    /// gzip and tar layers may wrap or replace it on the way up; it must be
    /// reported as I/O trouble, not as a damaged archive.
    source_error: Cell<Option<io::Error>>,
}

impl Stream {
    fn new() -> Self {
        Self {
            consumed: Cell::new(0),
            allowed: Cell::new(METADATA_ALLOWANCE),
            over_budget: Cell::new(false),
            source_error: Cell::new(None),
        }
    }

    /// Lets the parser read the current entry's data and padding plus the
    /// headers of the next one. Called right after an entry's headers are read,
    /// when `consumed` is the start of its data.
    fn allow_entry(&self, size: u64) {
        let padded = size.div_ceil(BLOCK).saturating_mul(BLOCK);
        self.allowed.set(self.consumed.get().saturating_add(padded).saturating_add(METADATA_ALLOWANCE));
    }

    /// Classifies an error that came out of the tar/gzip reader stack.
    fn read_error(&self, err: io::Error) -> ArchiveError {
        if let Some(source) = self.source_error.take() {
            return ArchiveError::Io(source);
        }
        if self.over_budget.get() {
            return ArchiveError::Corrupt(
                "it holds more than 1 MiB of headers, long names or padding around one entry".into(),
            );
        }
        if err.kind() == io::ErrorKind::UnexpectedEof {
            return ArchiveError::Corrupt("it ends unexpectedly, so the upload is probably truncated".into());
        }
        ArchiveError::Corrupt(err.to_string())
    }
}

/// The upload file, recording its own read errors in [`Stream`].
struct Source {
    file: File,
    stream: Rc<Stream>,
}

impl Read for Source {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.file.read(buf) {
            Err(err) if err.kind() != io::ErrorKind::Interrupted => {
                let kind = err.kind();
                self.stream.source_error.set(Some(err));
                Err(io::Error::new(kind, "reading the uploaded archive failed"))
            }
            other => other,
        }
    }
}

/// The decompressed stream, refusing to hand out more than [`Stream::allowed`].
struct Budgeted<R> {
    inner: R,
    stream: Rc<Stream>,
}

impl<R: Read> Read for Budgeted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let room = self.stream.allowed.get().saturating_sub(self.stream.consumed.get());
        if room == 0 && !buf.is_empty() {
            // Reaching the budget is only a problem if more data follows; a
            // stream that ends exactly there is fine.
            let mut probe = [0u8; 1];
            if self.inner.read(&mut probe)? == 0 {
                return Ok(0);
            }
            self.stream.over_budget.set(true);
            return Err(io::Error::other("archive metadata exceeds its budget"));
        }
        let len = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        let read = self.inner.read(&mut buf[..len])?;
        self.stream.consumed.set(self.stream.consumed.get() + read as u64);
        Ok(read)
    }
}

/// What to do with one validated entry.
enum Plan {
    /// Nothing to write: pax global headers, the root `./`, repeated directories.
    Skip,
    Dir(PathBuf),
    File {
        path: PathBuf,
        mode: u32,
    },
    /// `target` is kept as stored; it passed the lexical check, and the full
    /// check runs once the tree is complete.
    Symlink {
        path: PathBuf,
        target: PathBuf,
    },
    /// `target` is a normalised path of an earlier regular file.
    HardLink {
        path: PathBuf,
        target: PathBuf,
    },
}

/// What a path in the tree is, as far as the archive has described it.
enum Node {
    Dir,
    File,
    Symlink(PathBuf),
}

/// In-memory model of the tree the archive describes, so every entry can be
/// checked against the ones before it whether or not we write anything.
///
/// Invariant: every ancestor of a node is a `Node::Dir`.
#[derive(Default)]
struct Tree {
    nodes: HashMap<PathBuf, Node>,
    /// Symlink paths in archive order, for the final check.
    links: Vec<PathBuf>,
}

impl Tree {
    /// Validates an entry and records it in the tree.
    fn admit<R: Read>(&mut self, entry: &tar::Entry<'_, R>) -> Result<Plan, ArchiveError> {
        let header = entry.header();
        let kind = header.entry_type();
        // The tar crate folds long names and pax records into the entry they
        // describe; any that still surface (pax global headers, or ones in
        // pre-POSIX headers) carry no file.
        if matches!(
            kind,
            EntryType::XGlobalHeader | EntryType::XHeader | EntryType::GNULongName | EntryType::GNULongLink
        ) {
            return Ok(Plan::Skip);
        }

        let raw = entry.path().map_err(|e| ArchiveError::Corrupt(format!("an entry has an unreadable path: {e}")))?;
        let path = safe_relative(&raw).ok_or_else(|| ArchiveError::UnsafePath { path: shown(&raw) })?;
        // Pre-POSIX archives mark directories only by a trailing slash.
        let is_dir = kind == EntryType::Directory
            || (kind == EntryType::Regular
                && header.as_ustar().is_none()
                && raw.as_os_str().as_bytes().ends_with(b"/"));

        if path.as_os_str().is_empty() {
            // `./` is the destination itself.
            return if is_dir { Ok(Plan::Skip) } else { Err(ArchiveError::UnsafePath { path: shown(&raw) }) };
        }
        self.claim_parents(&path)?;
        match self.nodes.get(&path) {
            Some(Node::Dir) if is_dir => return Ok(Plan::Skip),
            Some(_) => {
                return Err(ArchiveError::Conflict { path: shown(&path), earlier: shown(&path) });
            }
            None => {}
        }

        let plan = if is_dir {
            self.nodes.insert(path.clone(), Node::Dir);
            Plan::Dir(path)
        } else {
            match kind {
                EntryType::Regular | EntryType::Continuous => {
                    let mode = header
                        .mode()
                        .map_err(|e| ArchiveError::Corrupt(format!("`{}` has an invalid mode: {e}", shown(&path))))?;
                    self.nodes.insert(path.clone(), Node::File);
                    Plan::File { path, mode }
                }
                EntryType::Symlink => {
                    let target = link_target(entry, &path)?;
                    // Only lexically here: links later in the archive can
                    // change where this one leads, so `check_all_links`
                    // resolves them all once the tree is complete.
                    if !plausible_target(&target) || !lexically_inside(&path, &target) {
                        return Err(escapes(&path, &target));
                    }
                    self.nodes.insert(path.clone(), Node::Symlink(target.clone()));
                    self.links.push(path.clone());
                    Plan::Symlink { path, target }
                }
                EntryType::Link => {
                    let raw_target = link_target(entry, &path)?;
                    let target = safe_relative(&raw_target)
                        .filter(|t| !t.as_os_str().is_empty())
                        .ok_or_else(|| escapes(&path, &raw_target))?;
                    // Only regular files: hard-linking a symlink would copy its
                    // target text to a new place, where it may point elsewhere.
                    if !matches!(self.nodes.get(&target), Some(Node::File)) {
                        return Err(ArchiveError::Corrupt(format!(
                            "the hard link `{}` refers to `{}`, which is not a regular file earlier in the archive",
                            shown(&path),
                            shown(&raw_target)
                        )));
                    }
                    self.nodes.insert(path.clone(), Node::File);
                    Plan::HardLink { path, target }
                }
                other => {
                    return Err(ArchiveError::UnsupportedEntry { path: shown(&path), kind: describe(other) });
                }
            }
        };
        Ok(plan)
    }

    /// Records the ancestors of `path` as directories, refusing if one is
    /// already a file or a symlink: writing there would fail or, worse, follow
    /// the link out of the tree.
    fn claim_parents(&mut self, path: &Path) -> Result<(), ArchiveError> {
        let mut missing = Vec::new();
        // Walk up only to the nearest known directory: by the invariant, its
        // own ancestors are directories already.
        for ancestor in path.ancestors().skip(1) {
            if ancestor.as_os_str().is_empty() {
                break;
            }
            match self.nodes.get(ancestor) {
                None => missing.push(ancestor),
                Some(Node::Dir) => break,
                Some(Node::File | Node::Symlink(_)) => {
                    return Err(ArchiveError::Conflict { path: shown(path), earlier: shown(ancestor) });
                }
            }
        }
        for ancestor in missing {
            self.nodes.insert(ancestor.to_path_buf(), Node::Dir);
        }
        Ok(())
    }

    /// Resolves every symlink against the complete tree.
    fn check_all_links(&self) -> Result<(), ArchiveError> {
        let mut work = 0;
        for link in &self.links {
            if let Some(Node::Symlink(target)) = self.nodes.get(link) {
                self.resolve_link(link, target, &mut work)?;
            }
        }
        Ok(())
    }

    /// Resolves `target` relative to the parent of `link`, following the
    /// symlinks the archive defines, and fails if the walk ever climbs above
    /// the root. Following the other links matters: with `a -> .`, the target
    /// `a/..` looks harmless lexically but leaves the tree.
    fn resolve_link(&self, link: &Path, target: &Path, work: &mut u64) -> Result<(), ArchiveError> {
        // Deepest node the archive defines on the way, plus how many
        // components the walk has gone below it. Nothing exists below a
        // missing path or a file, so that part is resolved by counting.
        let mut at = link.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut beyond: usize = 0;
        let mut pending: Vec<Component<'_>> = target.components().rev().collect();
        let mut hops = 0;
        while let Some(part) = pending.pop() {
            // Every step costs one unit, a lookup more: hashing `at` costs
            // about its length.
            *work += 1;
            if *work > MAX_LINK_WORK {
                return Err(ArchiveError::Corrupt(
                    "it has too many or too deeply chained symbolic links to check".into(),
                ));
            }
            match part {
                Component::CurDir => {}
                Component::ParentDir if beyond > 0 => beyond -= 1,
                Component::ParentDir => {
                    if !at.pop() {
                        return Err(escapes(link, target));
                    }
                }
                Component::Normal(_) if beyond > 0 => beyond += 1,
                Component::Normal(name) => {
                    at.push(name);
                    *work += at.as_os_str().len() as u64 / 64;
                    match self.nodes.get(&at) {
                        Some(Node::Dir) => {}
                        Some(Node::Symlink(next)) => {
                            hops += 1;
                            if hops > MAX_LINK_HOPS {
                                return Err(ArchiveError::Corrupt(format!(
                                    "the symbolic link `{}` goes through more than {MAX_LINK_HOPS} other links \
                                     (is there a loop?)",
                                    shown(link)
                                )));
                            }
                            at.pop();
                            pending.extend(next.components().rev());
                        }
                        Some(Node::File) | None => {
                            at.pop();
                            beyond = 1;
                        }
                    }
                }
                Component::RootDir | Component::Prefix(_) => return Err(escapes(link, target)),
            }
        }
        Ok(())
    }
}

/// The normal components of an entry path (a leading `./` dropped), or `None`
/// if it is absolute, uses `..`, has a Windows prefix, contains NUL, or is too
/// long to create.
fn safe_relative(raw: &Path) -> Option<PathBuf> {
    let bytes = raw.as_os_str().as_bytes();
    if bytes.len() > MAX_PATH_BYTES || bytes.contains(&0) {
        return None;
    }
    let mut clean = PathBuf::new();
    for part in raw.components() {
        match part {
            Component::CurDir => {}
            Component::Normal(name) if name.len() <= MAX_NAME_BYTES => clean.push(name),
            _ => return None,
        }
    }
    Some(clean)
}

/// Whether `target`, taken relative to the parent of `link` and with `..`
/// applied textually, stays inside the tree.
fn lexically_inside(link: &Path, target: &Path) -> bool {
    let mut depth = link.components().count().saturating_sub(1);
    for part in target.components() {
        match part {
            Component::CurDir => {}
            Component::Normal(_) => depth += 1,
            Component::ParentDir => match depth.checked_sub(1) {
                Some(up) => depth = up,
                None => return false,
            },
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

/// Whether a symlink target could be created at all; where it leads is
/// checked by [`lexically_inside`] and [`Tree::resolve_link`].
fn plausible_target(target: &Path) -> bool {
    let bytes = target.as_os_str().as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_PATH_BYTES
        && !bytes.contains(&0)
        && target.components().all(|part| match part {
            Component::Normal(name) => name.len() <= MAX_NAME_BYTES,
            _ => true,
        })
}

fn link_target<R: Read>(entry: &tar::Entry<'_, R>, path: &Path) -> Result<PathBuf, ArchiveError> {
    let target = entry
        .link_name()
        .map_err(|e| ArchiveError::Corrupt(format!("the link `{}` has an unreadable target: {e}", shown(path))))?;
    match target {
        Some(target) if !target.as_os_str().is_empty() => Ok(target.into_owned()),
        _ => Err(ArchiveError::Corrupt(format!("the link `{}` has no target", shown(path)))),
    }
}

fn escapes(path: &Path, target: &Path) -> ArchiveError {
    ArchiveError::LinkEscapes { path: shown(path), target: shown(target) }
}

fn describe(kind: EntryType) -> String {
    match kind {
        EntryType::Char => "character device".into(),
        EntryType::Block => "block device".into(),
        EntryType::Fifo => "named pipe (FIFO)".into(),
        EntryType::GNUSparse => "sparse file".into(),
        other => format!("entry of unknown type {:?}", char::from(other.as_byte())),
    }
}

/// A byte count for an error message, in MiB when that is exact.
fn size_text(bytes: u64) -> String {
    const MIB: u64 = 1 << 20;
    if bytes >= MIB && bytes.is_multiple_of(MIB) { format!("{} MiB", bytes / MIB) } else { format!("{bytes} bytes") }
}

/// A path for an error message: lossy UTF-8, shortened so a hostile archive
/// cannot flood logs and responses.
fn shown(path: &Path) -> String {
    let text = path.to_string_lossy();
    match text.char_indices().nth(MAX_SHOWN_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.into_owned(),
    }
}

/// Writes validated entries under the destination.
struct Writer<'a> {
    dest: &'a Path,
    /// Directories under `dest` known to be real directories (checked or
    /// created by us). Only this code writes under `dest`, so they stay so.
    dirs: HashSet<PathBuf>,
    buf: Vec<u8>,
}

impl<'a> Writer<'a> {
    fn new(dest: &'a Path) -> Self {
        Self { dest, dirs: HashSet::new(), buf: vec![0; 64 * 1024] }
    }

    fn write(&mut self, plan: &Plan, data: &mut impl Read, size: u64, stream: &Stream) -> Result<(), ArchiveError> {
        match plan {
            Plan::Skip => {}
            Plan::Dir(path) => self.make_dirs(path)?,
            Plan::File { path, mode } => {
                let full = self.prepare(path)?;
                // `create_new` (O_EXCL) never follows a symlink at the final
                // component and never reuses an existing file.
                let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&full)?;
                let mut written = 0u64;
                loop {
                    // Read and write errors are told apart here: a failed read
                    // is a bad archive, a failed write is our disk.
                    let read = match data.read(&mut self.buf) {
                        Ok(0) => break,
                        Ok(read) => read,
                        Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                        Err(err) => return Err(stream.read_error(err)),
                    };
                    file.write_all(&self.buf[..read])?;
                    written += read as u64;
                }
                if written != size {
                    return Err(ArchiveError::Corrupt(format!(
                        "it ends in the middle of `{}`, so the upload is probably truncated",
                        shown(path)
                    )));
                }
                // Set explicitly rather than at open so the umask cannot drop
                // the executable bit; 0o777 strips setuid, setgid and sticky.
                file.set_permissions(Permissions::from_mode(mode & 0o777))?;
            }
            Plan::Symlink { path, target } => {
                let full = self.prepare(path)?;
                std::os::unix::fs::symlink(target, full)?;
            }
            Plan::HardLink { path, target } => {
                let full = self.prepare(path)?;
                let original = self.dest.join(target);
                // `hard_link` does not follow a symlink at `original`; make
                // sure it is the regular file the tree says it is.
                if !fs::symlink_metadata(&original)?.is_file() {
                    return Err(ArchiveError::Conflict { path: shown(path), earlier: shown(target) });
                }
                fs::hard_link(original, full)?;
            }
        }
        Ok(())
    }

    /// Creates the parent directories of `path` and returns the full path to
    /// write.
    fn prepare(&mut self, path: &Path) -> Result<PathBuf, ArchiveError> {
        if let Some(parent) = path.parent() {
            self.make_dirs(parent)?;
        }
        Ok(self.dest.join(path))
    }

    /// `mkdir -p` for `rel` that refuses to pass through anything but a real
    /// directory. The tree model already rules that out; checking the disk as
    /// well means a symlink can never redirect a write out of `dest`.
    fn make_dirs(&mut self, rel: &Path) -> Result<(), ArchiveError> {
        let mut missing = Vec::new();
        for ancestor in rel.ancestors() {
            if ancestor.as_os_str().is_empty() || self.dirs.contains(ancestor) {
                break;
            }
            missing.push(ancestor);
        }
        // Top down, so each `lstat` only passes through checked directories.
        for dir in missing.into_iter().rev() {
            let full = self.dest.join(dir);
            match fs::symlink_metadata(&full) {
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => {
                    return Err(ArchiveError::Conflict { path: shown(rel), earlier: shown(dir) });
                }
                Err(err) if err.kind() == io::ErrorKind::NotFound => fs::create_dir(&full)?,
                Err(err) => return Err(err.into()),
            }
            self.dirs.insert(dir.to_path_buf());
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use flate2::Compression;
    use flate2::write::GzEncoder;
    use tar::{Builder, Header};
    use tempfile::TempDir;

    /// Builds a tar.gz in memory from whatever `fill` appends.
    fn targz(fill: impl FnOnce(&mut Builder<Vec<u8>>)) -> Vec<u8> {
        let mut builder = Builder::new(Vec::new());
        fill(&mut builder);
        let tar = builder.into_inner().unwrap();
        gzip(&tar)
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    /// Appends an entry with raw name and link bytes, bypassing the checks
    /// `Builder` applies, so unsafe archives can be crafted.
    fn raw(b: &mut Builder<Vec<u8>>, kind: EntryType, name: &str, link: &str, data: &[u8], mode: u32) {
        let mut header = Header::new_gnu();
        let gnu = header.as_gnu_mut().unwrap();
        gnu.name[..name.len()].copy_from_slice(name.as_bytes());
        gnu.linkname[..link.len()].copy_from_slice(link.as_bytes());
        header.set_entry_type(kind);
        header.set_size(data.len() as u64);
        header.set_mode(mode);
        header.set_mtime(0);
        header.set_cksum();
        b.append(&header, data).unwrap();
    }

    fn file(b: &mut Builder<Vec<u8>>, name: &str, data: &[u8], mode: u32) {
        raw(b, EntryType::Regular, name, "", data, mode);
    }

    fn symlink(b: &mut Builder<Vec<u8>>, name: &str, target: &str) {
        raw(b, EntryType::Symlink, name, target, b"", 0o777);
    }

    struct Case {
        dir: TempDir,
        archive: PathBuf,
        dest: PathBuf,
    }

    fn case(bytes: &[u8]) -> Case {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("upload.tar.gz");
        fs::write(&archive, bytes).unwrap();
        let dest = dir.path().join("out").join("tree");
        Case { dir, archive, dest }
    }

    /// Runs both `inspect` and `extract`, checks they agree, and checks that a
    /// failed extraction left nothing behind.
    fn run(bytes: &[u8], limit: u64) -> Result<ArchiveSummary, ArchiveError> {
        run_case(&case(bytes), Limits::new(limit))
    }

    fn run_case(c: &Case, limits: Limits) -> Result<ArchiveSummary, ArchiveError> {
        let inspected = walk(&c.archive, None, limits);
        let extracted = extract_with(&c.archive, &c.dest, limits);
        match (&inspected, &extracted) {
            (Ok(a), Ok(b)) => assert_eq!(a, b),
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
            _ => panic!("inspect {inspected:?} and extract {extracted:?} disagree"),
        }
        if extracted.is_err() {
            assert!(!c.dest.exists(), "a failed extraction left {} behind", c.dest.display());
        }
        // Nothing may ever appear next to the destination.
        let siblings: Vec<_> = fs::read_dir(c.dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert!(siblings.iter().all(|n| n == "upload.tar.gz" || n == "out"), "{siblings:?}");
        extracted
    }

    const LIMIT: u64 = 1 << 20;

    #[test]
    fn extracts_a_good_archive_and_keeps_the_exec_bit() {
        let bytes = targz(|b| {
            raw(b, EntryType::Directory, "./", "", b"", 0o755);
            raw(b, EntryType::Directory, "./src/", "", b"", 0o755);
            file(b, "./src/app/main.txt", b"hello", 0o644);
            file(b, "./run.sh", b"#!/bin/sh\necho hi\n", 0o4755);
            symlink(b, "./src/latest", "app/main.txt");
            symlink(b, "./src/app/up", "../../run.sh");
            raw(b, EntryType::Link, "./copy.txt", "./src/app/main.txt", b"", 0o644);
        });
        let c = case(&bytes);
        let summary = run_case(&c, Limits::new(LIMIT)).unwrap();
        assert_eq!(summary, ArchiveSummary { files: 7, unpacked_bytes: 5 + 18 });

        let d = &c.dest;
        assert_eq!(fs::read_to_string(d.join("src/app/main.txt")).unwrap(), "hello");
        assert_eq!(fs::read_to_string(d.join("src/latest")).unwrap(), "hello");
        assert_eq!(fs::read_to_string(d.join("copy.txt")).unwrap(), "hello");
        assert_eq!(fs::read_link(d.join("src/app/up")).unwrap(), Path::new("../../run.sh"));
        let mode = fs::metadata(d.join("run.sh")).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, 0o755, "exec bit kept, setuid dropped");
        let mode = fs::metadata(d.join("src/app/main.txt")).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, 0o644);
    }

    #[test]
    fn handles_long_names() {
        let long = format!("{}/file.txt", "deep".repeat(60));
        let bytes = targz(|b| {
            let mut header = Header::new_gnu();
            header.set_size(3);
            header.set_mode(0o644);
            b.append_data(&mut header, &long, &b"abc"[..]).unwrap();
        });
        let c = case(&bytes);
        assert_eq!(run_case(&c, Limits::new(LIMIT)).unwrap().files, 2);
        assert_eq!(fs::read(c.dest.join(&long)).unwrap(), b"abc");
    }

    #[test]
    fn rejects_an_absolute_path() {
        let bytes = targz(|b| file(b, "/etc/passwd", b"x", 0o644));
        assert!(matches!(run(&bytes, LIMIT), Err(ArchiveError::UnsafePath { path }) if path == "/etc/passwd"));
    }

    #[test]
    fn rejects_a_parent_dir_path() {
        let bytes = targz(|b| {
            file(b, "ok.txt", b"x", 0o644);
            file(b, "../x", b"x", 0o644);
        });
        assert!(matches!(run(&bytes, LIMIT), Err(ArchiveError::UnsafePath { path }) if path == "../x"));
        let bytes = targz(|b| file(b, "a/../../x", b"x", 0o644));
        assert!(matches!(run(&bytes, LIMIT), Err(ArchiveError::UnsafePath { .. })));
    }

    #[test]
    fn rejects_a_symlink_to_an_absolute_path() {
        let bytes = targz(|b| symlink(b, "etc", "/etc"));
        assert!(matches!(
            run(&bytes, LIMIT),
            Err(ArchiveError::LinkEscapes { path, target }) if path == "etc" && target == "/etc"
        ));
    }

    #[test]
    fn rejects_a_symlink_that_climbs_out() {
        let bytes = targz(|b| symlink(b, "a", "../.."));
        assert!(matches!(run(&bytes, LIMIT), Err(ArchiveError::LinkEscapes { .. })));
        // One level too far from a nested directory.
        let bytes = targz(|b| symlink(b, "x/y/a", "../../../z"));
        assert!(matches!(run(&bytes, LIMIT), Err(ArchiveError::LinkEscapes { .. })));
    }

    #[test]
    fn rejects_a_symlink_that_escapes_through_another_link() {
        // Lexically `a/..` is the root, but `a` is the root already, so
        // following it lands one level above. The order makes only the final
        // check see it.
        let bytes = targz(|b| {
            symlink(b, "b", "a/..");
            symlink(b, "a", ".");
        });
        assert!(matches!(run(&bytes, LIMIT), Err(ArchiveError::LinkEscapes { path, .. }) if path == "b"));
        let bytes = targz(|b| {
            symlink(b, "a", "a");
        });
        assert!(matches!(run(&bytes, LIMIT), Err(ArchiveError::Corrupt(_))));
    }

    #[test]
    fn rejects_writing_through_a_symlink() {
        // An escaping link is caught on its own ...
        let bytes = targz(|b| {
            symlink(b, "link", "/tmp");
            file(b, "link/evil", b"x", 0o644);
        });
        assert!(matches!(run(&bytes, LIMIT), Err(ArchiveError::LinkEscapes { .. })));
        // ... and even a link inside the tree may not be written through.
        let bytes = targz(|b| {
            raw(b, EntryType::Directory, "sub/", "", b"", 0o755);
            symlink(b, "link", "sub");
            file(b, "link/evil", b"x", 0o644);
        });
        assert!(matches!(
            run(&bytes, LIMIT),
            Err(ArchiveError::Conflict { path, earlier }) if path == "link/evil" && earlier == "link"
        ));
    }

    #[test]
    fn rejects_a_hard_link_out_of_the_tree() {
        let bytes = targz(|b| raw(b, EntryType::Link, "h", "../x", b"", 0o644));
        assert!(matches!(run(&bytes, LIMIT), Err(ArchiveError::LinkEscapes { target, .. }) if target == "../x"));
        let bytes = targz(|b| raw(b, EntryType::Link, "h", "/etc/passwd", b"", 0o644));
        assert!(matches!(run(&bytes, LIMIT), Err(ArchiveError::LinkEscapes { .. })));
    }

    #[test]
    fn rejects_a_hard_link_to_a_symlink_or_missing_file() {
        // Hard-linking `d/l -> ../x` to the root would make it point outside.
        let bytes = targz(|b| {
            symlink(b, "d/l", "../x");
            raw(b, EntryType::Link, "h", "d/l", b"", 0o644);
        });
        assert!(matches!(run(&bytes, LIMIT), Err(ArchiveError::Corrupt(_))));
        let bytes = targz(|b| raw(b, EntryType::Link, "h", "missing", b"", 0o644));
        assert!(matches!(run(&bytes, LIMIT), Err(ArchiveError::Corrupt(_))));
    }

    #[test]
    fn rejects_special_files() {
        let bytes = targz(|b| {
            file(b, "ok.txt", b"x", 0o644);
            raw(b, EntryType::Fifo, "pipe", "", b"", 0o644);
        });
        assert!(matches!(
            run(&bytes, LIMIT),
            Err(ArchiveError::UnsupportedEntry { path, kind }) if path == "pipe" && kind.contains("FIFO")
        ));
        let bytes = targz(|b| raw(b, EntryType::Char, "null", "", b"", 0o644));
        assert!(matches!(run(&bytes, LIMIT), Err(ArchiveError::UnsupportedEntry { .. })));
    }

    #[test]
    fn rejects_duplicates_and_files_used_as_directories() {
        let bytes = targz(|b| {
            file(b, "a", b"1", 0o644);
            file(b, "a", b"2", 0o644);
        });
        assert!(matches!(run(&bytes, LIMIT), Err(ArchiveError::Conflict { .. })));
        let bytes = targz(|b| {
            file(b, "a", b"1", 0o644);
            file(b, "a/b", b"2", 0o644);
        });
        assert!(matches!(run(&bytes, LIMIT), Err(ArchiveError::Conflict { earlier, .. }) if earlier == "a"));
        // A directory repeated, or given after its contents, is fine.
        let bytes = targz(|b| {
            file(b, "a/b", b"2", 0o644);
            raw(b, EntryType::Directory, "a/", "", b"", 0o755);
            raw(b, EntryType::Directory, "a/", "", b"", 0o755);
        });
        assert_eq!(run(&bytes, LIMIT).unwrap().files, 2);
    }

    #[test]
    fn rejects_a_non_gzip_upload() {
        let tar = {
            let mut b = Builder::new(Vec::new());
            file(&mut b, "a", b"x", 0o644);
            b.into_inner().unwrap()
        };
        assert!(matches!(run(&tar, LIMIT), Err(ArchiveError::NotGzip)));
        assert!(matches!(run(b"", LIMIT), Err(ArchiveError::NotGzip)));
        assert!(matches!(run(b"PK\x03\x04zip", LIMIT), Err(ArchiveError::NotGzip)));
        // Gzip, but not a tar inside.
        assert!(matches!(run(&gzip(b"just some text"), LIMIT), Err(ArchiveError::Corrupt(_))));
    }

    #[test]
    fn rejects_a_truncated_archive() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let bytes = targz(|b| {
            file(b, "first.txt", b"x", 0o644);
            file(b, "big.bin", &data, 0o644);
        });
        for cut in [bytes.len() / 2, bytes.len() - 4] {
            let err = run(&bytes[..cut], LIMIT).unwrap_err();
            assert!(matches!(err, ArchiveError::Corrupt(_)), "cut at {cut}: {err:?}");
            assert!(err.is_invalid_input());
        }
    }

    #[test]
    fn rejects_an_archive_over_the_size_limit() {
        let bytes = targz(|b| {
            file(b, "a", &[0; 600], 0o644);
            file(b, "b", &[0; 600], 0o644);
        });
        assert!(matches!(run(&bytes, 1000), Err(ArchiveError::TooLarge { limit: 1000 })));
        assert!(ArchiveError::TooLarge { limit: 512 << 20 }.to_string().contains("more than 512 MiB"));
        assert_eq!(run(&bytes, 1200).unwrap().unpacked_bytes, 1200);
    }

    #[test]
    fn rejects_too_many_files() {
        let bytes = targz(|b| {
            for i in 0..5 {
                file(b, &format!("f{i}"), b"", 0o644);
            }
        });
        let c = case(&bytes);
        let limits = Limits { bytes: LIMIT, files: 4 };
        assert!(matches!(run_case(&c, limits), Err(ArchiveError::TooManyFiles { limit: 4 })));
        // Directories implied by a deep path count too.
        let c = case(&targz(|b| file(b, "a/b/c/d/e", b"", 0o644)));
        assert!(matches!(run_case(&c, limits), Err(ArchiveError::TooManyFiles { limit: 4 })));
    }

    #[test]
    fn rejects_an_oversized_long_name() {
        // A 2 MiB GNU long name compresses to almost nothing but would be read
        // into memory whole.
        let bytes = targz(|b| {
            let name = vec![b'a'; 2 << 20];
            let mut header = Header::new_gnu();
            header.set_entry_type(EntryType::GNULongName);
            header.set_size(name.len() as u64);
            header.set_cksum();
            b.append(&header, &name[..]).unwrap();
            file(b, "x", b"x", 0o644);
        });
        assert!(matches!(run(&bytes, LIMIT), Err(ArchiveError::Corrupt(_))));
    }

    #[test]
    fn writer_refuses_a_symlink_already_on_disk() {
        // The tree model never lets this happen; the writer must refuse anyway.
        let dir = tempfile::tempdir().unwrap();
        let (dest, outside) = (dir.path().join("dest"), dir.path().join("outside"));
        fs::create_dir(&dest).unwrap();
        fs::create_dir(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, dest.join("link")).unwrap();
        let plan = Plan::File { path: PathBuf::from("link/evil"), mode: 0o644 };
        let result = Writer::new(&dest).write(&plan, &mut &b"x"[..], 1, &Stream::new());
        assert!(matches!(result, Err(ArchiveError::Conflict { earlier, .. }) if earlier == "link"));
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
    }

    #[test]
    fn leaves_an_existing_destination_alone() {
        let c = case(&targz(|b| file(b, "a", b"x", 0o644)));
        fs::create_dir_all(&c.dest).unwrap();
        fs::write(c.dest.join("keep"), b"mine").unwrap();
        let err = extract(&c.archive, &c.dest, LIMIT).unwrap_err();
        assert!(matches!(err, ArchiveError::Io(_)));
        assert!(!err.is_invalid_input());
        assert_eq!(fs::read(c.dest.join("keep")).unwrap(), b"mine");
    }

    #[test]
    fn reports_a_missing_upload_as_io() {
        let dir = tempfile::tempdir().unwrap();
        let err = inspect(&dir.path().join("nope.tar.gz"), LIMIT).unwrap_err();
        assert!(matches!(err, ArchiveError::Io(_)));
        assert!(!err.is_invalid_input());
    }
}
