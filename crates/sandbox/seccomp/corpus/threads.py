# Threads: threading, executors, queues, timers, sleeping.
import concurrent.futures, queue, threading, time
df = load_trades(days=None)
with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
    sums = list(pool.map(lambda g: g[1]["amount"].sum(), df.groupby("exchange")))
q = queue.Queue()
t = threading.Thread(target=lambda: q.put(sum(range(100000))), name="worker")
t.start(); t.join()
fired = threading.Event()
timer = threading.Timer(0.01, fired.set); timer.start()
assert fired.wait(5)
lock = threading.Condition()
with lock:
    lock.wait(0.001)
time.sleep(0.001)
local = threading.local(); local.x = 1
print(len(sums), q.get(), threading.active_count())
