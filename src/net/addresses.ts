// Which IP addresses an outbound call a client can steer must not reach: loopback, private,
// link-local (cloud metadata lives at 169.254.169.254), unspecified, multicast, broadcast and
// reserved ranges, also when written as an IPv6 form that embeds one of them (IPv4-mapped,
// IPv4-compatible, NAT64, 6to4). Input is an address as net.isIP accepts it.
import { BlockList, isIP } from "node:net";

interface Range {
  label: string;
  list: BlockList;
}

function range(label: string, v4: [string, number][], v6: [string, number][]): Range {
  const list = new BlockList();
  for (const [address, prefix] of v4) list.addSubnet(address, prefix, "ipv4");
  for (const [address, prefix] of v6) list.addSubnet(address, prefix, "ipv6");
  return { label, list };
}

const RANGES: Range[] = [
  range("loopback", [["127.0.0.0", 8]], [["::1", 128]]),
  range("unspecified", [["0.0.0.0", 8]], [["::", 128]]),
  range(
    "private",
    [
      ["10.0.0.0", 8],
      ["172.16.0.0", 12],
      ["192.168.0.0", 16],
      ["100.64.0.0", 10], // carrier-grade NAT
    ],
    [
      ["fc00::", 7], // unique local
      ["fec0::", 10], // site-local (deprecated, still routed by some)
      ["64:ff9b:1::", 48], // local-use NAT64
    ],
  ),
  range("link-local", [["169.254.0.0", 16]], [["fe80::", 10]]),
  range("multicast", [["224.0.0.0", 4]], [["ff00::", 8]]),
  range(
    "reserved",
    [
      ["240.0.0.0", 4], // includes the broadcast address 255.255.255.255
      ["192.0.0.0", 24], // IETF protocol assignments
      ["192.0.2.0", 24],
      ["198.51.100.0", 24],
      ["203.0.113.0", 24],
      ["198.18.0.0", 15], // benchmarking
    ],
    [
      ["100::", 64], // discard-only
      ["2001:db8::", 32], // documentation
    ],
  ),
];

/** The 8 16-bit words of an IPv6 address (which may end in a dotted IPv4 part). */
function ipv6Words(address: string): number[] {
  let text = address.toLowerCase().replace(/%.*$/, "");
  const dotted = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (dotted) {
    const [a, b, c, d] = dotted[1]!.split(".").map(Number) as [number, number, number, number];
    text = `${text.slice(0, dotted.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head, tail] = text.split("::") as [string, string | undefined];
  const parse = (part: string) => (part === "" ? [] : part.split(":").map((w) => Number.parseInt(w, 16)));
  const left = parse(head);
  const right = tail === undefined ? [] : parse(tail);
  const fill = tail === undefined ? [] : new Array<number>(8 - left.length - right.length).fill(0);
  return [...left, ...fill, ...right];
}

function ipv4Of(high: number, low: number): string {
  return `${high >> 8}.${high & 0xff}.${low >> 8}.${low & 0xff}`;
}

/** An IPv4 address an IPv6 address stands for, when it is one of the forms that embed one. */
function embeddedIpv4(address: string): string | undefined {
  const w = ipv6Words(address);
  const zeros = (from: number, to: number) => w.slice(from, to).every((x) => x === 0);
  // ::ffff:a.b.c.d (mapped), ::a.b.c.d (compatible; also covers :: and ::1), ::ffff:0:a.b.c.d (translated)
  if (zeros(0, 5) && (w[5] === 0xffff || w[5] === 0)) return ipv4Of(w[6]!, w[7]!);
  if (zeros(0, 4) && w[4] === 0xffff && w[5] === 0) return ipv4Of(w[6]!, w[7]!);
  // 64:ff9b::a.b.c.d (NAT64 well-known prefix)
  if (w[0] === 0x64 && w[1] === 0xff9b && zeros(2, 6)) return ipv4Of(w[6]!, w[7]!);
  // 2002:aabb:ccdd::/48 (6to4)
  if (w[0] === 0x2002) return ipv4Of(w[1]!, w[2]!);
  return undefined;
}

/**
 * Why `address` may not be reached ("loopback", "private", "link-local", ...), or undefined for a
 * public address. Anything that is not an IP address is refused as "not an IP address".
 */
export function blockedRange(address: string): string | undefined {
  const bare = address.replace(/^\[|\]$/g, "");
  const family = isIP(bare);
  if (family === 0) return "not an IP address";
  const type = family === 4 ? "ipv4" : "ipv6";
  for (const r of RANGES) if (r.list.check(bare, type)) return r.label;
  if (family === 6) {
    const v4 = embeddedIpv4(bare);
    if (v4 !== undefined) {
      const inner = blockedRange(v4);
      if (inner !== undefined) return inner;
    }
  }
  return undefined;
}
