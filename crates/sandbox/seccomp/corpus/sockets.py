# Unix sockets, polling and asyncio inside the job (no network exists).
import asyncio, os, select, socket, threading
a, b = socket.socketpair()
a.sendall(b"ping"); print(b.recv(4))
a.sendmsg([b"x"]); b.recvmsg(1)
print(select.select([b], [], [], 0), select.poll().poll(0))
ep = select.epoll(); ep.register(b.fileno(), select.EPOLLIN); ep.poll(0); ep.close()
a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536); a.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
a.shutdown(socket.SHUT_RDWR); a.close(); b.close()
srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); srv.bind("/tmp/sock"); srv.listen()
cli = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); cli.connect("/tmp/sock")
conn, _ = srv.accept(); cli.send(b"hi"); print(conn.recv(2), srv.getsockname(), cli.getpeername())
d = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); d.bind("/tmp/dsock"); d.sendto(b"d", "/tmp/dsock"); d.recvfrom(1)
for s in (conn, cli, srv, d):
    s.close()
efd = os.eventfd(0); os.eventfd_write(efd, 1); os.eventfd_read(efd); os.close(efd)
async def main():
    await asyncio.sleep(0.01)
    return await asyncio.gather(*(asyncio.to_thread(sum, range(1000)) for _ in range(2)))
print(asyncio.run(main()))
