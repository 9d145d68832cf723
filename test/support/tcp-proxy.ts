// A TCP proxy on a loopback port, for partitioning one process from another (e.g. a node from
// PostgreSQL). blackhole() keeps every connection open but drops all bytes both ways, as a
// network that silently loses packets would; new connections are accepted and treated the same.
// heal() forwards again. A stream that lost bytes cannot carry on (its peers disagree on what was
// said), so heal() resets the connections that lived through the blackhole, as TCP would once its
// retransmissions gave up; the clients reconnect.
import net from "node:net";

export interface TcpProxy {
  port: number;
  /** Connections currently open through the proxy. */
  connections(): number;
  blackhole(): void;
  heal(): void;
  close(): Promise<void>;
}

interface Pair {
  client: net.Socket;
  upstream: net.Socket;
  /** Lost bytes while the proxy was blackholed: it is reset on heal (an idle one carries on). */
  tainted: boolean;
}

export async function startTcpProxy(target: { host: string; port: number }): Promise<TcpProxy> {
  const pairs = new Set<Pair>();
  let dropping = false;

  const server = net.createServer((client) => {
    const upstream = net.connect(target.port, target.host);
    const pair: Pair = { client, upstream, tainted: dropping };
    pairs.add(pair);
    const relay = (from: net.Socket, to: net.Socket) => {
      from.on("data", (chunk) => {
        if (dropping) {
          pair.tainted = true;
          return;
        }
        to.write(chunk);
      });
    };
    relay(client, upstream);
    relay(upstream, client);
    const end = () => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    // While blackholed, a side that goes away is not told to the other: nothing gets through.
    for (const socket of [client, upstream]) {
      socket.on("error", () => {});
      socket.on("close", () => {
        if (!dropping) end();
      });
    }
  });
  await new Promise<void>((ready) => server.listen(0, "127.0.0.1", ready));
  const address = server.address();
  if (address === null || typeof address === "string") throw new Error("the proxy has no port");

  return {
    port: address.port,
    connections: () => pairs.size,
    blackhole() {
      dropping = true;
    },
    heal() {
      dropping = false;
      for (const pair of [...pairs]) {
        if (!pair.tainted && !pair.client.destroyed && !pair.upstream.destroyed) continue;
        pairs.delete(pair);
        pair.client.resetAndDestroy();
        pair.upstream.resetAndDestroy();
      }
    },
    close: () =>
      new Promise<void>((done) => {
        for (const pair of pairs) {
          pair.client.destroy();
          pair.upstream.destroy();
        }
        pairs.clear();
        server.close(() => done());
      }),
  };
}
