# What a job may ask about itself: identity, time, limits, randomness, CPUs.
import datetime, os, random, resource, secrets, sys, time, uuid
print(os.getpid(), os.getppid(), os.getuid(), os.geteuid(), os.getgid(), os.getegid(), os.getgroups())
print(os.getresuid(), os.getresgid(), os.getpgid(0), os.getpgrp(), os.getsid(0), os.uname().sysname)
print(os.times().user >= 0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss > 0)
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE); resource.setrlimit(resource.RLIMIT_NOFILE, (soft - 1, hard))
print(os.urandom(4) != b"", secrets.token_hex(4), random.SystemRandom().random() < 1, uuid.uuid4().version)
print(os.cpu_count(), len(os.sched_getaffinity(0)), os.sched_getscheduler(0), os.sched_getparam(0))
os.sched_yield()
print(time.time() > 0, time.monotonic(), time.process_time(), time.thread_time(), time.clock_getres(time.CLOCK_MONOTONIC))
print(datetime.datetime.now(), datetime.datetime.now(datetime.timezone.utc).astimezone(), time.localtime().tm_zone)
time.sleep(0.001)
print(os.sysconf("SC_PAGE_SIZE"), os.sysconf("SC_NPROCESSORS_ONLN"), os.sysconf("SC_PHYS_PAGES"))
print(sys.getrecursionlimit(), sys.getsizeof([]), sys.stdout.isatty(), os.isatty(0), os.get_terminal_size(1) if os.isatty(1) else None)
try:
    os.get_terminal_size()
except OSError:
    pass
try:
    raise ValueError("an error a job handles")
except ValueError:
    import traceback; traceback.format_exc()
print(time.get_clock_info("process_time").resolution, time.get_clock_info("thread_time").resolution)
