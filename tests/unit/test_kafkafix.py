"""kafkafix's socket backstop: what a client's connect opened, its close closes."""
import socket
import threading

from kafka.net.inet import KafkaNetSocket
from kafka.net.selector import NetworkSelector

from kafkatail.tail import kafkafix


def test_a_socket_still_connecting_when_the_client_closes_is_closed_with_it():
    kafkafix.apply()
    listener = socket.create_server(("127.0.0.1", 0))
    net = NetworkSelector()
    try:
        addr = socket.getaddrinfo("127.0.0.1", listener.getsockname()[1], socket.AF_INET,
                                  socket.SOCK_STREAM)[0]
        # The connect a closing client leaves behind: started, never finished or awaited again.
        pending = KafkaNetSocket().connect(net, addr)
        pending.send(None)
        [sock] = list(kafkafix._sockets[net])
        assert sock.fileno() != -1
        net.close()
        assert sock.fileno() == -1
        assert net not in kafkafix._sockets
        pending.close()
    finally:
        listener.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("kafka-")]
