# The scratch folder: everything the standard library does with files.
import fcntl, gzip, mmap, os, pathlib, shutil, sqlite3, tempfile, zipfile
df = load_trades(days=None)
df.to_csv("/tmp/trades.csv", index=False)
back = pd.read_csv("/tmp/trades.csv")
df.to_parquet("/tmp/trades.parquet")
back = pd.read_parquet("/tmp/trades.parquet")
df.head(100).to_json("/tmp/trades.json"); pd.read_json("/tmp/trades.json")
os.makedirs("/tmp/a/b/c", exist_ok=True)
with open("/tmp/a/f.txt", "w") as f:
    f.write("x" * 100000); f.flush(); os.fsync(f.fileno()); os.fdatasync(f.fileno())
print(sorted(os.listdir("/tmp/a")), [e.name for e in os.scandir("/tmp/a")], list(pathlib.Path("/tmp").glob("*.csv")))
st = os.stat("/tmp/a/f.txt"); os.lstat("/tmp/a/f.txt")
os.rename("/tmp/a/f.txt", "/tmp/a/g.txt"); os.replace("/tmp/a/g.txt", "/tmp/a/f.txt")
shutil.copyfile("/tmp/a/f.txt", "/tmp/a/copy.txt"); shutil.copy("/tmp/a/f.txt", "/tmp/a/copy2.txt")
shutil.move("/tmp/a/copy2.txt", "/tmp/a/b/moved.txt")
os.symlink("/tmp/a/f.txt", "/tmp/a/link"); print(os.readlink("/tmp/a/link"), os.path.realpath("/tmp/a/link"))
os.chmod("/tmp/a/f.txt", 0o600); os.utime("/tmp/a/f.txt", (1, 1)); os.truncate(os.open("/tmp/a/f.txt", os.O_RDWR), 10)
fd = os.open("/tmp/a/raw", os.O_RDWR | os.O_CREAT, 0o644)
os.write(fd, b"hello"); os.pwrite(fd, b"J", 0); print(os.pread(fd, 5, 0)); os.lseek(fd, 0, os.SEEK_SET)
os.writev(fd, [b"a", b"b"]); os.readv(fd, [bytearray(2)])
os.posix_fallocate(fd, 0, 4096); os.ftruncate(fd, 8192); os.fchmod(fd, 0o640); os.fstat(fd)
fcntl.flock(fd, fcntl.LOCK_EX); fcntl.flock(fd, fcntl.LOCK_UN); fcntl.lockf(fd, fcntl.LOCK_EX)
os.set_inheritable(fd, True); os.set_blocking(fd, False); os.set_blocking(fd, True)
with open("/tmp/a/raw", "rb") as src, open("/tmp/a/raw2", "wb") as dst:
    os.sendfile(dst.fileno(), src.fileno(), 0, 5)
    os.copy_file_range(src.fileno(), dst.fileno(), 5)
os.close(fd)
with open("/tmp/a/map", "wb") as f:
    f.truncate(1 << 20)
with open("/tmp/a/map", "r+b") as f:
    m = mmap.mmap(f.fileno(), 0); m[:5] = b"hello"; m.flush(); m.madvise(mmap.MADV_DONTNEED); m.resize(2 << 20); m.close()
np.memmap("/tmp/a/np.dat", dtype="float64", mode="w+", shape=(1000,))[:] = 1
print(os.access("/tmp/a", os.W_OK), os.statvfs("/tmp").f_bsize, os.getcwd())
os.chdir("/tmp/a"); dfd = os.open("/tmp", os.O_RDONLY); os.fchdir(dfd); os.close(dfd); os.chdir("/tmp")
os.umask(0o022)
r, w = os.pipe(); w2 = os.dup(w); os.dup2(w2, w); os.write(w, b"x"); os.read(r, 1); [os.close(x) for x in (r, w, w2)]
with gzip.open("/tmp/a/z.gz", "wt") as f:
    f.write("data")
with zipfile.ZipFile("/tmp/a/z.zip", "w") as z:
    z.writestr("a.txt", "a")
db = sqlite3.connect("/tmp/a/db.sqlite"); df.head(100).to_sql("t", db); db.execute("select count(*) from t").fetchone(); db.commit(); db.close()
with tempfile.TemporaryDirectory() as d, tempfile.NamedTemporaryFile() as t:
    pathlib.Path(d, "x").write_text("x")
os.remove("/tmp/a/link"); os.unlink("/tmp/a/raw2"); os.rmdir("/tmp/a/b/c")
shutil.rmtree("/tmp/a")
# The *at variants (paths relative to an open folder), descriptor-based queries.
os.makedirs("/tmp/at")
at = os.open("/tmp/at", os.O_RDONLY | os.O_DIRECTORY)
os.mkdir("d", dir_fd=at); open("/tmp/at/f", "w").close()
os.rename("f", "g", src_dir_fd=at, dst_dir_fd=at); os.symlink("g", "l", dir_fd=at); os.readlink("l", dir_fd=at)
os.chmod("g", 0o600, dir_fd=at); os.access("g", os.R_OK, dir_fd=at); os.access("/tmp/at/l", os.R_OK, follow_symlinks=False)
os.stat("g", dir_fd=at); os.fstatvfs(at); os.unlink("l", dir_fd=at); os.rmdir("d", dir_fd=at)
a, b = os.open("/dev/null", os.O_RDONLY), os.open("/dev/null", os.O_RDONLY)
os.dup2(a, b, inheritable=False); os.closerange(a, b + 1)
os.close(at); shutil.rmtree("/tmp/at")
