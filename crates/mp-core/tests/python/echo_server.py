"""A plain Python `multiprocessing.connection.Listener` for the Rust client tests.

    python3 echo_server.py (tcp|unix PATH) AUTHKEY CLIENTS

Prints "listening on ADDRESS", then serves CLIENTS clients one after the other: each
message is answered in upper case (b"len?" is answered with the length of the previous
message, for large ones) until the client closes. A client that fails the handshake is
reported as "refused: ..." and counts as served.
"""
import sys
from multiprocessing.connection import Listener, AuthenticationError


def main():
    if sys.argv[1] == "tcp":
        address, rest = ("127.0.0.1", 0), sys.argv[2:]
    else:
        address, rest = sys.argv[2], sys.argv[3:]
    authkey = rest[0].encode()
    clients = int(rest[1])
    with Listener(address, authkey=authkey) as listener:
        where = listener.address
        if isinstance(where, tuple):
            where = f"{where[0]}:{where[1]}"
        print(f"listening on {where}", flush=True)
        for _ in range(clients):
            try:
                conn = listener.accept()
            except AuthenticationError as e:
                print(f"refused: {e}", flush=True)
                continue
            last = b""
            with conn:
                while True:
                    try:
                        message = conn.recv_bytes()
                    except EOFError:
                        break
                    if message == b"len?":
                        conn.send_bytes(str(len(last)).encode())
                    else:
                        conn.send_bytes(message.upper())
                    last = message
            print("client done", flush=True)


if __name__ == "__main__":
    main()
