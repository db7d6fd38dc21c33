//! Process limits the daemons set for themselves.

/// Let glibc's malloc use one arena. By default it adds arenas for the
/// threads that allocate (up to 8 per core), and a supernode's per-client
/// state, allocated from whichever runtime thread runs the actor, ends up
/// spread over several half-empty arenas: one arena took 380 bytes per
/// client off a supernode's memory (BENCHMARKS.md). Call before any thread
/// starts. A no-op on other C libraries.
pub fn single_malloc_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a malloc parameter.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Raise this process's soft limit on open files to its hard limit, and
/// return the new soft limit. A supernode holds one descriptor per
/// connection: the usual soft limit (1024, or the shell's) would cap it far
/// below `--max-connections`.
pub fn raise_nofile_limit() -> std::io::Result<u64> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one rlimit struct, which `lim` is.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: setrlimit reads one rlimit struct, which `lim` is.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(lim.rlim_cur)
}
