//! Device access and the I/O thread pool.
//!
//! Disk reads and writes block, and a blocked tokio worker stalls every
//! request scheduled on it, so all device I/O runs here: on a few dedicated
//! std threads fed through a channel. Async callers hand over a closure and
//! await a oneshot. [`Device`] wraps the O_DIRECT file with positional,
//! block-aligned reads and writes.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;

use super::aligned::{align_down, align_up, BufPool, PooledBuf, ALIGN};

/// An opened device or device file.
#[derive(Debug)]
pub struct Device {
    file: File,
    path: PathBuf,
    size: u64,
    block_device: bool,
}

impl Device {
    /// Opens `path` for O_DIRECT I/O, creating a sparse file of `create_size`
    /// bytes if it does not exist. Block devices are opened exclusively
    /// (O_EXCL), which fails while they are mounted.
    pub fn open(path: &Path, create_size: Option<u64>) -> io::Result<Self> {
        let existed = path.exists();
        if !existed {
            let Some(size) = create_size else {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    "does not exist and no size was given to create it",
                ));
            };
            let f = OpenOptions::new().write(true).create_new(true).open(path)?;
            f.set_len(size)?;
            f.sync_all()?;
        }
        let block_device = std::fs::metadata(path)?.file_type().is_block_device();
        let mut flags = libc::O_DIRECT;
        if block_device {
            flags |= libc::O_EXCL;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(flags)
            .open(path)?;
        if existed && !block_device && file.metadata()?.len() == 0 {
            if let Some(size) = create_size {
                file.set_len(size)?;
            }
        }
        let size = file.seek(SeekFrom::End(0))?;
        Ok(Self {
            file,
            path: path.to_path_buf(),
            size,
            block_device,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn is_block_device(&self) -> bool {
        self.block_device
    }

    /// Writes an aligned buffer at an aligned offset.
    pub fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }

    /// Reads into an aligned buffer at an aligned offset.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    /// Reads `len` bytes at any `offset` into a buffer from `bufs`: the
    /// covering aligned span is read and the wanted bytes are
    /// `buf[start..start + len]`.
    pub fn read_unaligned(&self, offset: u64, len: usize, bufs: &Arc<BufPool>) -> io::Result<(PooledBuf, usize)> {
        let first = align_down(offset, ALIGN as u64);
        let last = align_up(offset + len as u64, ALIGN as u64).min(align_down(self.size, ALIGN as u64));
        if last < offset + len as u64 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "read past the device end"));
        }
        let mut buf = bufs.take((last - first) as usize);
        self.read_at(buf.as_mut_slice(), first)?;
        Ok((buf, (offset - first) as usize))
    }

    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

type Job = Box<dyn FnOnce() + Send + 'static>;

/// A fixed set of threads running submitted closures.
#[derive(Debug)]
pub struct IoPool {
    tx: Mutex<Option<mpsc::Sender<Job>>>,
    threads: Mutex<Vec<thread::JoinHandle<()>>>,
}

impl IoPool {
    pub fn new(name: &str, threads: usize) -> io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let mut handles = Vec::with_capacity(threads.max(1));
        for i in 0..threads.max(1) {
            let rx = Arc::clone(&rx);
            let handle = thread::Builder::new().name(format!("{name}-{i}")).spawn(move || loop {
                let job = {
                    let guard = rx.lock().unwrap_or_else(PoisonError::into_inner);
                    guard.recv()
                };
                match job {
                    Ok(job) => job(),
                    Err(_) => break,
                }
            })?;
            handles.push(handle);
        }
        Ok(Self {
            tx: Mutex::new(Some(tx)),
            threads: Mutex::new(handles),
        })
    }

    /// Runs `job` on a pool thread. Returns false once the pool is shut down.
    pub fn execute(&self, job: impl FnOnce() + Send + 'static) -> bool {
        let guard = self.tx.lock().unwrap_or_else(PoisonError::into_inner);
        match guard.as_ref() {
            Some(tx) => tx.send(Box::new(job)).is_ok(),
            None => false,
        }
    }

    /// Lets the threads exit once queued jobs are done.
    pub fn shutdown(&self) {
        self.tx.lock().unwrap_or_else(PoisonError::into_inner).take();
    }

    /// Shuts down and waits for the threads to exit. A job drops what it
    /// captured only after it has answered its caller, so this is the point
    /// from which no job holds anything (such as the device) any more.
    pub fn join(&self) {
        self.shutdown();
        let handles = std::mem::take(&mut *self.threads.lock().unwrap_or_else(PoisonError::into_inner));
        let me = thread::current().id();
        for handle in handles {
            // A pool thread never waits for itself.
            if handle.thread().id() != me {
                let _ = handle.join();
            }
        }
    }
}

impl Drop for IoPool {
    fn drop(&mut self) {
        self.shutdown();
    }
}
