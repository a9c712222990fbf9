//! Tests of the memory arena: block packing and freeing, huge pages from
//! the own mount, and the populating thread.
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;

use super::*;

/// A small arena: 16 blocks of 16 pages.
fn arena(huge: HugePages) -> Arena {
    Arena::with_blocks(16 * BLOCK, BLOCK, huge).expect("memfd arena")
}
const BLOCK: u64 = 16 * PAGE;

fn pages(n: u64, byte: u8) -> Vec<u8> {
    vec![byte; (n * PAGE) as usize]
}

/// `len` bytes of an arena's file at a place [`Arena::locate`] gave.
fn file_bytes((file, offset): (&File, u64), len: usize) -> Vec<u8> {
    let mut buf = vec![0; len];
    file.read_exact_at(&mut buf, offset).expect("read");
    buf
}

/// The offset [`Arena::locate`] gives.
fn offset(arena: &Arena, bytes: &[u8]) -> Option<u64> {
    arena.locate(bytes).map(|(_, offset)| offset)
}

#[test]
fn stored_bytes_read_back_and_locate_in_the_file() {
    let arena = Arena::new(8 << 20).expect("memfd arena");
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let stored = arena.store(&data).expect("room");
    assert_eq!(&stored[..], &data[..]);
    let located = arena.locate(&stored).expect("inside the arena");
    assert_eq!(file_bytes(located, data.len()), data);
    // A slice of the view is located at its own offset.
    let part = stored.slice(5000..6000);
    assert_eq!(offset(&arena, &part), Some(located.1 + 5000));
    assert!(arena.locate(&data).is_none(), "heap bytes are not in the arena");
}

/// The kB of shared memory mapped with PMD (huge) pages in the mapping
/// of this process that holds `at`, from `/proc/self/smaps`.
fn pmd_mapped_kb(at: *const u8) -> u64 {
    let smaps = std::fs::read_to_string("/proc/self/smaps").expect("smaps");
    let at = at as usize;
    let mut inside = false;
    for line in smaps.lines() {
        let range = line.split_whitespace().next().and_then(|r| r.split_once('-'));
        // A mapping's first line starts with its address range.
        if let Some((lo, hi)) = range {
            if let (Ok(lo), Ok(hi)) = (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16)) {
                inside = (lo..hi).contains(&at);
                continue;
            }
        }
        if let Some(kb) = line.strip_prefix("ShmemPmdMapped:").filter(|_| inside) {
            return kb.trim().trim_end_matches("kB").trim().parse().expect("kB");
        }
    }
    panic!("no mapping holds {at:#x}");
}

#[test]
fn a_root_agent_gets_huge_pages_from_its_own_mount_whatever_the_host_policy() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: mounting a tmpfs needs CAP_SYS_ADMIN");
        return;
    }
    let policy = shmem_policy(Path::new(THP_SYSFS), DEFAULT_BLOCK);
    if !own_mount_helps(policy.as_deref()) || pmd_size(Path::new(THP_SYSFS)) != Some(DEFAULT_BLOCK) {
        eprintln!("skipped: host shmem policy {policy:?} or PMD size other than 2 MiB");
        return;
    }
    let arena = Arena::new(16 << 20).expect("arena");
    assert_eq!(arena.huge_pages(), HugePages::OwnMount);
    // Before the thread populated them, a fill would spill to base pages.
    eventually("two blocks populated", || arena.populated_blocks() >= 2);
    let data: Vec<u8> = (0..(4u32 << 20)).map(|i| (i % 247) as u8).collect();
    let stored = arena.store(&data).expect("room");
    // Reading through the arena's mapping faults the pages in; huge
    // pages are mapped whole.
    assert_eq!(&stored[..], &data[..]);
    let kb = pmd_mapped_kb(stored.as_ptr());
    assert!(
        kb >= 2048,
        "{kb} kB mapped with huge pages, want at least one 2 MiB page"
    );
}

/// Polls `done` until it holds, for at most ten seconds.
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "not within 10 s: {what}");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// An own-mount arena of 2 MiB blocks, when this process may mount.
fn own_mount_arena(size: u64) -> Option<Arena> {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: mounting a tmpfs needs CAP_SYS_ADMIN");
        return None;
    }
    Some(Arena::with_blocks(size, DEFAULT_BLOCK, HugePages::OwnMount).expect("own-mount arena"))
}

#[test]
fn a_thread_populates_the_next_free_blocks_before_fills_need_them() {
    let Some(arena) = own_mount_arena(64 << 20) else { return };
    let ahead = AHEAD as u64;
    eventually("the first blocks populated", || arena.populated_blocks() >= ahead);
    let allocated = arena.inner.file.metadata().expect("stat").blocks() * 512;
    assert!(allocated >= ahead * DEFAULT_BLOCK, "{allocated} bytes of pages");
    // Two 1 MiB extents per block: the populated blocks take them all
    // without populating anything on the way.
    let extents: Vec<(Vec<u8>, Bytes)> = (0..2 * AHEAD)
        .map(|i| {
            let data: Vec<u8> = (0..1u32 << 20).map(|j| (j as usize % 241 + i) as u8).collect();
            let stored = arena.store(&data).expect("room");
            (data, stored)
        })
        .collect();
    assert_eq!(arena.spilled_extents(), 0, "every extent found a populated block");
    for (data, stored) in &extents {
        assert_eq!(&stored[..], &data[..]);
    }
    // The thread moved on to the next free blocks; freed blocks are
    // punched and populated again.
    eventually("the next blocks populated", || arena.populated_blocks() >= 2 * ahead);
    drop(extents);
    eventually("freed blocks populated again", || arena.populated_blocks() >= 3 * ahead);
    let again = arena.store(&pages(300, 9)).expect("room");
    assert_eq!(&again[..], &pages(300, 9)[..]);
}

#[test]
fn bytes_stay_exact_while_blocks_are_populated_freed_and_reused_at_once() {
    let Some(arena) = own_mount_arena(24 << 20) else { return };
    let workers: Vec<_> = (0..4u8)
        .map(|t| {
            let arena = arena.clone();
            std::thread::spawn(move || {
                let mut kept = std::collections::VecDeque::new();
                for i in 0..300u32 {
                    let len = [4096, 65_536, 1 << 20, 3 << 20][(i as usize + t as usize) % 4];
                    let data: Vec<u8> = (0..len).map(|j| (j as u32 ^ i ^ (u32::from(t) * 7)) as u8).collect();
                    if let Some(stored) = arena.store(&data) {
                        assert_eq!(&stored[..], &data[..], "thread {t} extent {i}");
                        kept.push_back((data, stored));
                    }
                    if kept.len() > 3 {
                        let (data, stored) = kept.pop_front().expect("kept");
                        assert_eq!(&stored[..], &data[..], "thread {t}: an older extent changed");
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("no thread saw a changed byte");
    }
    let ahead = arena.populated_blocks();
    assert!(ahead > 0, "the populating thread ran");
}

/// Where blocks are populated ahead, a fill that finds no populated block
/// goes to base pages in the spill file rather than wait for a block's
/// pages to be cleared; it is located in that file, and blocks once
/// populated take extents again.
#[test]
fn a_fill_with_no_populated_block_spills_instead_of_waiting() {
    let arena = Arena::build(16 * BLOCK, BLOCK, HugePages::Advise, false).expect("arena");
    let data = pages(20, 4); // two blocks' worth, less than two full blocks
    let spilled = arena.store(&data).expect("room in the spill file");
    assert_eq!(&spilled[..], &data[..]);
    assert_eq!(arena.spilled_extents(), 1);
    assert_eq!(arena.free_bytes(), 16 * BLOCK, "the huge-page file is untouched");
    let (file, at) = arena.locate(&spilled).expect("located");
    assert_ne!(file.as_raw_fd(), arena.inner.file.as_raw_fd(), "in the spill file");
    assert_eq!(file_bytes((file, at), data.len()), data);
    // Two blocks populated (as the thread would): the next extent of that
    // size goes to them.
    for b in 0..2 {
        assert!(arena.inner.populate_block(b), "MADV_POPULATE_WRITE works here");
        arena.inner.lock_blocks().mark_prepared(b, 0);
    }
    let placed = arena.store(&pages(20, 5)).expect("room");
    let (file, at) = arena.locate(&placed).expect("located");
    assert_eq!((file.as_raw_fd(), at), (arena.inner.file.as_raw_fd(), 0));
    assert_eq!(arena.spilled_extents(), 1);
    assert_eq!(arena.populated_blocks(), 0, "nothing populated on the fill's path");
    assert_eq!(file_bytes((file, at), 20 * PAGE as usize), pages(20, 5));
    drop(spilled);
    assert!(arena.store(&pages(1, 6)).is_some(), "small extents still find room");
}

#[test]
fn pieces_are_stored_back_to_back_as_one_extent() {
    let arena = Arena::new(8 << 20).expect("memfd arena");
    let data: Vec<u8> = (0..300_001u32).map(|i| (i % 253) as u8).collect();
    let pieces: Vec<Bytes> = data.chunks(65_536).map(Bytes::copy_from_slice).collect();
    let stored = arena.store_parts(&pieces).expect("room");
    assert_eq!(&stored[..], &data[..]);
    let located = arena.locate(&stored).expect("inside the arena");
    assert_eq!(file_bytes(located, data.len()), data);
    assert!(arena.store_parts::<Bytes>(&[]).is_none(), "nothing to store");
}

#[test]
fn small_extents_share_a_block_that_is_freed_only_when_all_are_gone() {
    let arena = arena(HugePages::Off);
    let a = arena.store(&pages(4, 1)).expect("a");
    let b = arena.store(&pages(4, 2)).expect("b");
    let file = arena.locate(&a).expect("a").0.try_clone().expect("dup");
    let (at_a, at_b) = (offset(&arena, &a).expect("a"), offset(&arena, &b).expect("b"));
    assert_eq!(at_b, at_a + 4 * PAGE, "packed into one block");
    assert_eq!(arena.free_bytes(), 16 * BLOCK - 8 * PAGE);
    drop(a);
    assert_eq!(
        file_bytes((&file, at_a), 4),
        [1; 4],
        "a's pages stay while b holds the block"
    );
    // 12 pages do not fit the open block's last 8: a new block opens,
    // and the old one is held by b alone.
    let c = arena.store(&pages(12, 3)).expect("c");
    assert_eq!(offset(&arena, &c), Some(at_a + BLOCK));
    assert_eq!(arena.free_bytes(), 14 * BLOCK + 4 * PAGE);
    drop(b);
    assert_eq!(arena.free_bytes(), 15 * BLOCK + 4 * PAGE, "the first block came back");
    assert_eq!(
        file_bytes((&file, at_a), BLOCK as usize),
        vec![0; BLOCK as usize],
        "punched"
    );
    assert!(c.iter().all(|&x| x == 3), "a neighbour is untouched");
}

#[test]
fn large_extents_take_whole_blocks_that_coalesce_when_freed() {
    let arena = arena(HugePages::Off);
    let a = arena.store(&pages(16, 1)).expect("a: one block");
    let b = arena.store(&pages(20, 2)).expect("b: two blocks");
    let c = arena.store(&pages(13 * 16, 3)).expect("c: the other 13");
    assert!(arena.store(&[4; 1]).is_none(), "the arena is full");
    assert_eq!(arena.free_bytes(), 0);
    drop((a, b));
    assert_eq!(arena.free_bytes(), 3 * BLOCK);
    // Only a coalesced a+b run fits this.
    let d = arena.store(&pages(3 * 16, 5)).expect("a and b coalesced");
    assert!(d.iter().all(|&x| x == 5));
    assert!(c.iter().all(|&x| x == 3));
    drop((c, d));
    assert_eq!(arena.free_bytes(), 16 * BLOCK);
}

#[test]
fn a_view_outlives_the_other_views_of_its_extent() {
    let arena = arena(HugePages::Off);
    let a = arena.store(&pages(16, 7)).expect("a");
    let clone = a.slice(10..20);
    drop(a);
    assert_eq!(arena.free_bytes(), 15 * BLOCK, "one lease for all views");
    assert!(clone.iter().all(|&x| x == 7));
    drop(clone);
    assert_eq!(arena.free_bytes(), 16 * BLOCK);
}

/// The property the block design exists for: bytes handed to a socket
/// with `sendfile` and not yet read keep their value after their extent
/// is evicted and its block refilled. (With huge pages on, a partial
/// punch would zero them; without a punch the refill would overwrite
/// them.)
#[test]
fn bytes_in_a_socket_survive_their_block_being_freed_and_refilled() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let sender = std::net::TcpStream::connect(listener.local_addr().expect("address")).expect("connect");
    let (mut receiver, _) = listener.accept().expect("accept");
    // Small blocks, and the host's real ones (huge pages where its
    // policy allows).
    let arenas = [
        arena(HugePages::Off),
        arena(HugePages::Advise),
        Arena::new(16 << 20).expect("arena"),
    ];
    for arena in arenas {
        let block = arena.block_size();
        let half = (block / 2) as usize;
        let data: Vec<u8> = (0..half).map(|i| (i % 253) as u8).collect();
        let (a, neighbour) = (arena.store(&data).expect("a"), arena.store(&vec![9; half]).expect("b"));
        let (file, mut offset) = arena.locate(&a).expect("in the arena");
        let file = file.try_clone().expect("dup");
        let mut left = half.min(64 << 10); // what the socket takes without a reader
        let sent_from = offset;
        while left > 0 {
            left -= rustix::fs::sendfile(&sender, &file, Some(&mut offset), left).expect("sendfile");
        }
        let sent = (offset - sent_from) as usize;
        drop((a, neighbour));
        // Every block refilled with other bytes (where blocks are populated
        // ahead, some refills spill until the thread reaches theirs).
        let mut refill = Vec::new();
        eventually("every block refilled", || {
            if let Some(b) = arena.store(&vec![0xee; block as usize]) {
                refill.push(b);
            }
            arena.free_bytes() == 0
        });
        let mut got = vec![0; sent];
        receiver.read_exact(&mut got).expect("read");
        assert!(got == data[..sent], "{arena:?}: the socket sent changed bytes");
    }
}

fn thp_dir(pmd_kb: u64, top: &str, pmd: Option<&str>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("hpage_pmd_size"), format!("{}\n", pmd_kb << 10)).expect("write");
    std::fs::write(dir.path().join("shmem_enabled"), top).expect("write");
    if let Some(value) = pmd {
        let d = dir.path().join(format!("hugepages-{pmd_kb}kB"));
        std::fs::create_dir(&d).expect("mkdir");
        std::fs::write(d.join("shmem_enabled"), value).expect("write");
    }
    dir
}

#[test]
fn the_host_policy_for_pmd_folios_decides_huge_pages() {
    let never = "always within_size advise [never] deny force\n";
    let advise = "always within_size [advise] never deny force\n";
    let within = "always [within_size] advise never deny force\n";
    let inherit = "always [inherit] within_size advise never\n";
    let always = "[always] inherit within_size advise never\n";
    let off = "always inherit within_size advise [never]\n";
    let policy = |dir: tempfile::TempDir| {
        let pmd = pmd_size(dir.path()).expect("pmd size");
        memfd_huge_pages(shmem_policy(dir.path(), pmd).as_deref())
    };
    assert_eq!(policy(thp_dir(2048, never, Some(inherit))), HugePages::Off);
    assert_eq!(policy(thp_dir(2048, advise, Some(inherit))), HugePages::Advise);
    assert_eq!(policy(thp_dir(2048, within, None)), HugePages::OnWrite);
    // The size's own setting wins over the global one.
    assert_eq!(policy(thp_dir(2048, never, Some(always))), HugePages::OnWrite);
    assert_eq!(policy(thp_dir(2048, advise, Some(off))), HugePages::Off);
    assert_eq!(shmem_policy(Path::new("/nonexistent/thp"), 2 << 20), None);
    // A tmpfs of the arena's own is tried only where a memfd gets base
    // pages, and never under `deny`, which no mount escapes.
    assert!(own_mount_helps(Some("never")) && own_mount_helps(None) && own_mount_helps(Some("advise")));
    assert!(!own_mount_helps(Some("deny")) && !own_mount_helps(Some("always")));
    assert_eq!(pmd_size(Path::new("/nonexistent/thp")), None);
}
