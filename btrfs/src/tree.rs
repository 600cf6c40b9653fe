//! Tree blocks: reading, verifying, caching and searching B-trees.
//! Why one file of about 600 lines: reading, checking, caching and searching
//! blocks share `Node` and the checks every block passes.
//!
//! Every block is checked before use the way the kernel checks it: the
//! checksum, then that the header names the address it was read from, this
//! filesystem's fsid, the level and generation its parent promised, and the
//! first key the parent's pointer carries; then that items lie inside the
//! block and keys are strictly ascending. A copy that fails any check is
//! skipped for the next mirror (DUP keeps two); when every copy fails, the
//! first copy's error is returned.

use std::collections::HashMap;
use std::fs::File;
use std::ops::ControlFlow;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::chunk::ChunkMap;
use super::error::ReadError;
use super::format::*;
use super::layout;
use super::superblock::ChecksumType;

/// Where a tree starts: its root block and what that block must say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TreeRoot {
    /// Logical address of the root block.
    pub bytenr: u64,
    /// Level of the root block (0: the root is a leaf).
    pub level: u8,
    /// Generation the root block must carry.
    pub generation: u64,
}

/// An item in a leaf: its key and where its data lies in the block.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LeafItem {
    pub key: Key,
    /// Byte range of the item's data in the block.
    pub start: usize,
    pub end: usize,
}

/// A `btrfs_key_ptr` in an internal node.
#[derive(Clone, Copy, Debug)]
struct KeyPtr {
    key: Key,
    blockptr: u64,
    generation: u64,
}

#[derive(Debug)]
enum Body {
    Leaf {
        items: Vec<LeafItem>,
        block: Vec<u8>,
    },
    Internal {
        ptrs: Vec<KeyPtr>,
    },
}

/// A verified tree block.
#[derive(Debug)]
pub(crate) struct Node {
    logical: u64,
    level: u8,
    generation: u64,
    body: Body,
}

/// What a block must say to be the one its parent points at.
#[derive(Clone, Copy, Debug)]
struct Expect {
    level: u8,
    generation: u64,
    first_key: Option<Key>,
}

impl Node {
    /// Parse a block whose checksum was verified, checking its header
    /// against `logical`, `fsid` and `expect`.
    fn parse(
        block: Vec<u8>,
        logical: u64,
        fsid: &[u8; BTRFS_UUID_SIZE],
        expect: &Expect,
    ) -> Result<Node, ReadError> {
        let bad = |reason: String| ReadError::BadBlock { logical, reason };
        let header = Reader::new(&block, "tree block header").read::<layout::Header>()?;
        let block_fsid = header.fsid;
        let bytenr = header.bytenr.get();
        let generation = header.generation.get();
        let nritems = header.nritems.get() as usize;
        let level = header.level;

        if bytenr != logical {
            return Err(bad(format!("header says bytenr {bytenr}")));
        }
        if &block_fsid != fsid {
            return Err(bad(format!(
                "belongs to filesystem {}, not {}",
                format_uuid(&block_fsid),
                format_uuid(fsid)
            )));
        }
        if level != expect.level {
            return Err(bad(format!("level {level}, expected {}", expect.level)));
        }
        if generation != expect.generation {
            return Err(bad(format!(
                "generation {generation}, parent expects {} (parent transid verify failed)",
                expect.generation
            )));
        }

        let body = if level == 0 {
            let items = parse_leaf_items(&block, nritems).map_err(bad)?;
            Body::Leaf { items, block }
        } else {
            let ptrs = parse_key_ptrs(&block, nritems).map_err(bad)?;
            Body::Internal { ptrs }
        };
        let node = Node {
            logical,
            level,
            generation,
            body,
        };
        if let Some(want) = expect.first_key {
            match node.first_key() {
                Some(k) if k == want => {}
                got => {
                    return Err(bad(format!(
                        "first key {}, parent expects {want}",
                        got.map_or("(none)".to_string(), |k| k.to_string())
                    )))
                }
            }
        }
        Ok(node)
    }

    pub(crate) fn first_key(&self) -> Option<Key> {
        match &self.body {
            Body::Leaf { items, .. } => items.first().map(|i| i.key),
            Body::Internal { ptrs } => ptrs.first().map(|p| p.key),
        }
    }

    /// Level of this block (0 for leaves).
    pub fn level(&self) -> u8 {
        self.level
    }

    /// Logical address of this block.
    pub fn logical(&self) -> u64 {
        self.logical
    }

    /// Generation of this block.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// For a leaf, its bytes exactly as read (the verified copy) and its
    /// items; `None` for an internal node.
    pub(crate) fn leaf(&self) -> Option<(&[u8], &[LeafItem])> {
        match &self.body {
            Body::Leaf { items, block } => Some((block, items)),
            Body::Internal { .. } => None,
        }
    }

    /// An internal node's children's logical addresses; `None` for a leaf.
    pub(crate) fn children(&self) -> Option<impl Iterator<Item = u64> + '_> {
        match &self.body {
            Body::Internal { ptrs } => Some(ptrs.iter().map(|p| p.blockptr)),
            Body::Leaf { .. } => None,
        }
    }

    fn check(&self, expect: &Expect) -> Result<(), ReadError> {
        // A cached block is re-checked against each parent that points at it.
        if self.level != expect.level || self.generation != expect.generation {
            return Err(ReadError::BadBlock {
                logical: self.logical,
                reason: format!(
                    "level {} generation {}, parent expects level {} generation {}",
                    self.level, self.generation, expect.level, expect.generation
                ),
            });
        }
        if let Some(want) = expect.first_key {
            if self.first_key() != Some(want) {
                return Err(ReadError::BadBlock {
                    logical: self.logical,
                    reason: format!("first key differs from parent's pointer {want}"),
                });
            }
        }
        Ok(())
    }
}

/// The items of leaf bytes edited since they were verified (`logical`: where).
pub(crate) fn leaf_items_of(block: &[u8], logical: u64) -> Result<Vec<LeafItem>, ReadError> {
    let bad = |reason: String| ReadError::BadBlock { logical, reason };
    let h = Reader::new(block, "tree block header").read::<layout::Header>()?;
    match h.level {
        0 => parse_leaf_items(block, h.nritems.get() as usize).map_err(bad),
        _ => Err(bad("expected a leaf".to_string())),
    }
}

pub(crate) fn parse_leaf_items(block: &[u8], nritems: usize) -> Result<Vec<LeafItem>, String> {
    let data_area = block.len() - BTRFS_HEADER_SIZE;
    if nritems.saturating_mul(BTRFS_ITEM_SIZE) > data_area {
        return Err(format!("{nritems} items do not fit in a leaf"));
    }
    let mut items = Vec::with_capacity(nritems);
    let mut r = Reader::at(block, BTRFS_HEADER_SIZE, "leaf");
    let headers_end = nritems * BTRFS_ITEM_SIZE;
    for i in 0..nritems {
        let item = r.read::<layout::Item>().map_err(|e| e.to_string())?;
        let key = Key::from_disk(&item.key);
        let offset = item.offset.get() as usize;
        let size = item.size.get() as usize;
        let end = offset
            .checked_add(size)
            .filter(|&end| end <= data_area && offset >= headers_end)
            .ok_or_else(|| format!("item {i} data [{offset}, +{size}) outside the leaf"))?;
        if let Some(prev) = items.last().map(|p: &LeafItem| p.key) {
            if prev >= key {
                return Err(format!("item {i} key {key} not above previous {prev}"));
            }
        }
        items.push(LeafItem {
            key,
            start: BTRFS_HEADER_SIZE + offset,
            end: BTRFS_HEADER_SIZE + end,
        });
    }
    Ok(items)
}

fn parse_key_ptrs(block: &[u8], nritems: usize) -> Result<Vec<KeyPtr>, String> {
    let data_area = block.len() - BTRFS_HEADER_SIZE;
    if nritems == 0 || nritems.saturating_mul(BTRFS_KEY_PTR_SIZE) > data_area {
        return Err(format!("{nritems} pointers in an internal node"));
    }
    let mut ptrs = Vec::with_capacity(nritems);
    let mut r = Reader::at(block, BTRFS_HEADER_SIZE, "node");
    for i in 0..nritems {
        let ptr = r.read::<layout::KeyPtr>().map_err(|e| e.to_string())?;
        let key = Key::from_disk(&ptr.key);
        let blockptr = ptr.blockptr.get();
        let generation = ptr.generation.get();
        if let Some(prev) = ptrs.last().map(|p: &KeyPtr| p.key) {
            if prev >= key {
                return Err(format!("pointer {i} key {key} not above previous {prev}"));
            }
        }
        ptrs.push(KeyPtr {
            key,
            blockptr,
            generation,
        });
    }
    Ok(ptrs)
}

/// Verified blocks kept between look-ups.
///
/// Internal nodes are few (about one per hundred leaves) and are kept for
/// the life of the image. Leaves go through two generations: when the young
/// one is full it becomes the old one and the previous old one is dropped,
/// and a hit in the old generation moves the block back to the young one.
/// That bounds memory while keeping every leaf a directory walk revisits.
struct NodeCache {
    internal: HashMap<u64, Arc<Node>>,
    young: HashMap<u64, Arc<Node>>,
    old: HashMap<u64, Arc<Node>>,
    leaves_per_generation: usize,
}

/// Memory for one generation of cached leaves. mkfs numbers inodes in the
/// order it walks the source, so a directory walk finds most leaves it
/// needs among the recent ones: 8 MiB a generation keeps a build's peak
/// memory low (measured: 32 MiB made verification dominate rootbox's RSS).
const LEAF_CACHE_BYTES: usize = 8 << 20;

impl NodeCache {
    fn new(nodesize: u32) -> NodeCache {
        NodeCache {
            internal: HashMap::new(),
            young: HashMap::new(),
            old: HashMap::new(),
            leaves_per_generation: (LEAF_CACHE_BYTES / nodesize as usize).max(16),
        }
    }

    fn get(&mut self, logical: u64) -> Option<Arc<Node>> {
        if let Some(n) = self
            .internal
            .get(&logical)
            .or_else(|| self.young.get(&logical))
        {
            return Some(Arc::clone(n));
        }
        let n = self.old.remove(&logical)?;
        self.insert(Arc::clone(&n));
        Some(n)
    }

    fn insert(&mut self, node: Arc<Node>) {
        if node.level > 0 {
            self.internal.insert(node.logical, node);
            return;
        }
        if self.young.len() >= self.leaves_per_generation {
            self.old = std::mem::take(&mut self.young);
        }
        self.young.insert(node.logical, node);
    }
}

/// A callback of [`BlockReader::range`]: key and data of one item.
pub(crate) type ItemVisitor<'a> = dyn FnMut(&Key, &[u8]) -> Result<ControlFlow<()>, ReadError> + 'a;

/// Reads verified tree blocks from the image file.
pub(crate) struct BlockReader {
    file: File,
    /// Where the filesystem starts in the file (a partition's offset).
    base: u64,
    path: PathBuf,
    nodesize: u32,
    devid: u64,
    fsid: [u8; BTRFS_UUID_SIZE],
    csum_type: ChecksumType,
    chunks: ChunkMap,
    cache: Mutex<NodeCache>,
}

impl BlockReader {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        file: File,
        base: u64,
        path: PathBuf,
        nodesize: u32,
        devid: u64,
        fsid: [u8; BTRFS_UUID_SIZE],
        csum_type: ChecksumType,
        chunks: ChunkMap,
    ) -> BlockReader {
        BlockReader {
            file,
            base,
            path,
            nodesize,
            devid,
            fsid,
            csum_type,
            chunks,
            cache: Mutex::new(NodeCache::new(nodesize)),
        }
    }

    /// Replace the chunk map (after the chunk tree was read with the
    /// bootstrap map from the superblock), dropping cached blocks.
    pub fn set_chunks(&mut self, chunks: ChunkMap) {
        self.chunks = chunks;
        self.cache = Mutex::new(NodeCache::new(self.nodesize));
    }

    /// Physical offsets of every copy of the block at `logical`.
    pub fn physical_copies(&self, logical: u64) -> Result<Vec<u64>, ReadError> {
        self.chunks.map(logical, self.nodesize.into(), self.devid)
    }

    /// Read `buf.len()` bytes at `offset` of the image file.
    pub fn read_physical(&self, offset: u64, buf: &mut [u8]) -> Result<(), ReadError> {
        self.file
            .read_exact_at(buf, self.base + offset)
            .map_err(|source| ReadError::Io {
                path: self.path.clone(),
                offset,
                source,
            })
    }

    /// The image file and where the filesystem starts in it.
    pub fn file(&self) -> (&File, u64) {
        (&self.file, self.base)
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, NodeCache> {
        // The cache holds only verified, immutable blocks: a panic elsewhere
        // cannot leave it inconsistent.
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn read_node(&self, logical: u64, expect: &Expect) -> Result<Arc<Node>, ReadError> {
        if let Some(node) = self.lock_cache().get(logical) {
            node.check(expect)?;
            return Ok(node);
        }
        let mut first_error = None;
        for physical in self.physical_copies(logical)? {
            match self.read_copy(logical, physical, expect) {
                Ok(node) => {
                    let node = Arc::new(node);
                    self.lock_cache().insert(Arc::clone(&node));
                    return Ok(node);
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        Err(first_error.unwrap_or(ReadError::UnmappedLogical(logical)))
    }

    fn read_copy(&self, logical: u64, physical: u64, expect: &Expect) -> Result<Node, ReadError> {
        let mut block = vec![0u8; self.nodesize as usize];
        self.read_physical(physical, &mut block)?;
        let (csum, data) = block.split_at(BTRFS_CSUM_SIZE);
        if !self.csum_type.verify(csum, data)? {
            return Err(ReadError::BadBlockChecksum { logical, physical });
        }
        Node::parse(block, logical, &self.fsid, expect)
    }

    /// The verified block at `logical` that a parent pointer promising
    /// `level`, `generation` and `first_key` names (from the cache when
    /// it is there).
    pub fn read_block(
        &self,
        logical: u64,
        level: u8,
        generation: u64,
        first_key: Option<Key>,
    ) -> Result<Arc<Node>, ReadError> {
        let expect = Expect {
            level,
            generation,
            first_key,
        };
        self.read_node(logical, &expect)
    }

    /// Size of a tree block.
    pub fn nodesize(&self) -> u32 {
        self.nodesize
    }

    /// Checksum algorithm of the filesystem.
    pub fn csum_type(&self) -> ChecksumType {
        self.csum_type
    }

    fn read_root(&self, root: &TreeRoot) -> Result<Arc<Node>, ReadError> {
        if root.level >= BTRFS_MAX_LEVEL {
            return Err(ReadError::Corrupt(format!(
                "tree root {} has level {}",
                root.bytenr, root.level
            )));
        }
        let expect = Expect {
            level: root.level,
            generation: root.generation,
            first_key: None,
        };
        self.read_node(root.bytenr, &expect)
    }

    /// The child `slot` of internal node `node`.
    fn read_child(&self, node: &Node, slot: usize) -> Result<Arc<Node>, ReadError> {
        let Body::Internal { ptrs } = &node.body else {
            return Err(ReadError::Corrupt("descending from a leaf".to_string()));
        };
        let ptr = ptrs
            .get(slot)
            .ok_or_else(|| ReadError::Corrupt(format!("slot {slot} past end of node")))?;
        let expect = Expect {
            level: node.level - 1,
            generation: ptr.generation,
            first_key: Some(ptr.key),
        };
        self.read_node(ptr.blockptr, &expect)
    }

    /// Call `f` with every item whose key is in `min..=max`, in key order,
    /// until it returns `Break`.
    pub fn range(
        &self,
        root: &TreeRoot,
        min: Key,
        max: Key,
        f: &mut ItemVisitor<'_>,
    ) -> Result<(), ReadError> {
        if min > max {
            return Ok(());
        }
        // The path from the root to the current leaf: (block, slot).
        let mut path: Vec<(Arc<Node>, usize)> = Vec::with_capacity(BTRFS_MAX_LEVEL.into());
        let mut node = self.read_root(root)?;
        loop {
            match &node.body {
                Body::Internal { ptrs } => {
                    // The last pointer whose key is <= min (or the first).
                    let slot = ptrs.partition_point(|p| p.key <= min).saturating_sub(1);
                    let child = self.read_child(&node, slot)?;
                    path.push((node, slot));
                    node = child;
                }
                Body::Leaf { items, .. } => {
                    let slot = items.partition_point(|i| i.key < min);
                    path.push((node, slot));
                    break;
                }
            }
        }

        while let Some((leaf, slot)) = path.last_mut() {
            if let Body::Leaf { items, block } = &leaf.body {
                if let Some(item) = items.get(*slot) {
                    if item.key > max {
                        return Ok(());
                    }
                    let data = block.get(item.start..item.end).unwrap_or_default();
                    if f(&item.key, data)?.is_break() {
                        return Ok(());
                    }
                    *slot += 1;
                    continue;
                }
            }
            // This leaf is done: climb to the first ancestor with a next
            // pointer, then go down its leftmost edge.
            path.pop();
            let mut next = None;
            while let Some((parent, slot)) = path.last_mut() {
                *slot += 1;
                let Body::Internal { ptrs } = &parent.body else {
                    return Err(ReadError::Corrupt("leaf above a leaf".to_string()));
                };
                match ptrs.get(*slot) {
                    Some(p) if p.key > max => return Ok(()),
                    Some(_) => {
                        next = Some(self.read_child(parent, *slot)?);
                        break;
                    }
                    None => {
                        path.pop();
                    }
                }
            }
            let Some(mut node) = next else {
                return Ok(());
            };
            while node.level > 0 {
                let child = self.read_child(&node, 0)?;
                path.push((node, 0));
                node = child;
            }
            path.push((node, 0));
        }
        Ok(())
    }

    /// The data of the item with exactly `key`, if there is one.
    pub fn get(&self, root: &TreeRoot, key: Key) -> Result<Option<Vec<u8>>, ReadError> {
        let mut out = None;
        self.range(root, key, key, &mut |_, data| {
            out = Some(data.to_vec());
            Ok(ControlFlow::Break(()))
        })?;
        Ok(out)
    }

    /// Call `f` with every block of the tree, parents before children.
    pub fn visit_blocks(
        &self,
        root: &TreeRoot,
        f: &mut dyn FnMut(&Node) -> Result<(), ReadError>,
    ) -> Result<(), ReadError> {
        let mut stack = vec![self.read_root(root)?];
        while let Some(node) = stack.pop() {
            f(&node)?;
            if let Body::Internal { ptrs } = &node.body {
                for slot in (0..ptrs.len()).rev() {
                    stack.push(self.read_child(&node, slot)?);
                }
            }
        }
        Ok(())
    }
}
