# Signals a job raises on itself: handlers, os.kill of itself, raise_signal,
# pthread_kill, timers, alarm, faulthandler, masks.
import faulthandler, os, signal, threading, time
got = []
signal.signal(signal.SIGUSR1, lambda s, f: got.append(s))
os.kill(os.getpid(), signal.SIGUSR1)
signal.raise_signal(signal.SIGUSR1)
signal.pthread_kill(threading.get_ident(), signal.SIGUSR1)
os.kill(os.getpid(), 0)
signal.signal(signal.SIGINT, signal.default_int_handler)
try:
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.1)
except KeyboardInterrupt:
    got.append("int")
signal.setitimer(signal.ITIMER_REAL, 0.5)
print(signal.getitimer(signal.ITIMER_REAL)[0] > 0)
signal.setitimer(signal.ITIMER_REAL, 0)
signal.signal(signal.SIGALRM, lambda s, f: got.append("alarm"))
signal.alarm(10); signal.alarm(0)
old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2})
signal.pthread_kill(threading.get_ident(), signal.SIGUSR2)
print(signal.sigtimedwait({signal.SIGUSR2}, 1).si_signo)
signal.pthread_sigmask(signal.SIG_SETMASK, old)
with open("/tmp/tb.txt", "w") as tb:
    faulthandler.enable(file=tb)
    faulthandler.dump_traceback(file=tb, all_threads=True)
    faulthandler.disable()
print(got)
