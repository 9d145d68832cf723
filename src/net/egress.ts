// One egress policy for every outbound call a client or a model can steer (the web tools, MCP
// server URLs, model and embedding endpoints named in a request or an agent file): loopback,
// private, link-local (cloud metadata), unspecified, multicast and reserved addresses are refused
// unless the operator allows them (KELPIE_EGRESS_ALLOW: host names or CIDRs). Endpoints the
// operator configured (OPENAI_BASE_URL and the like) are trusted as they are.
//
// Host names are checked after DNS resolution, and the connection is pinned to the checked
// addresses (egress-fetch.ts hands `lookup` to the socket), so a name cannot resolve to a public
// address for the check and to a private one for the connection.
import { lookup as dnsLookup, type LookupAddress } from "node:dns";
import { BlockList, isIP } from "node:net";
import { KelpieError } from "../core/errors.ts";
import { blockedRange } from "./addresses.ts";

export const EGRESS_ALLOW_ENV = "KELPIE_EGRESS_ALLOW";

/** Resolves a host name to every address it has (the DNS seam; tests inject their own). */
export type Resolver = (hostname: string) => Promise<LookupAddress[]>;

export const systemResolver: Resolver = (hostname) =>
  new Promise((resolve, reject) =>
    dnsLookup(hostname, { all: true, verbatim: true }, (err, addresses) =>
      err ? reject(err) : resolve(addresses),
    ),
  );

export interface EgressOptions {
  /** Host names (`*.example.com` for its subdomains), IP addresses and CIDRs reachable despite the policy. */
  allow?: readonly string[];
  /** Base URLs the operator configured: their origins are reached without any check. */
  trusted?: readonly string[];
  resolve?: Resolver;
}

/** The policy refused a destination: a 403 that says which address and why, and how to allow it. */
export class EgressRefusedError extends KelpieError {
  override name = "EgressRefusedError";

  constructor(message: string) {
    super("EGRESS_REFUSED", message);
  }
}

/** The refusal somewhere in an error's cause chain (fetch and the SDKs wrap what a socket threw). */
export function egressRefusalIn(err: unknown): EgressRefusedError | undefined {
  for (let e = err, depth = 0; e instanceof Error && depth < 8; e = e.cause, depth++) {
    if (e instanceof EgressRefusedError) return e;
  }
  return undefined;
}

function bareHost(hostname: string): string {
  return hostname
    .toLowerCase()
    .replace(/^\[|\]$/g, "")
    .replace(/\.$/, "");
}

interface Subnet {
  address: string;
  prefix: number;
  family: 4 | 6;
}

interface AllowList {
  hosts: Set<string>;
  /** `*.example.com` entries, stored as ".example.com". */
  suffixes: string[];
  subnets: Subnet[];
}

/** Parses KELPIE_EGRESS_ALLOW entries; throws an Error naming the first bad entry. */
export function parseEgressAllow(entries: readonly string[]): AllowList {
  const allow: AllowList = { hosts: new Set(), suffixes: [], subnets: [] };
  for (const raw of entries) {
    const entry = raw.trim().toLowerCase().replace(/\.$/, "");
    if (entry === "") continue;
    const [head = "", prefixText] = entry.split("/");
    const address = head.replace(/^\[|\]$/g, "");
    const family = isIP(address);
    if (family !== 0) {
      const max = family === 4 ? 32 : 128;
      const prefix = prefixText === undefined ? max : Number(prefixText);
      if ((prefixText !== undefined && !/^\d{1,3}$/.test(prefixText)) || prefix > max)
        throw new Error(`${EGRESS_ALLOW_ENV}: '${raw}' has a bad prefix length (0 to ${max})`);
      allow.subnets.push({ address, prefix, family: family === 4 ? 4 : 6 });
    } else if (prefixText === undefined && /^(\*\.)?[a-z0-9_-]+(\.[a-z0-9_-]+)*$/.test(entry)) {
      if (entry.startsWith("*.")) allow.suffixes.push(entry.slice(1));
      else allow.hosts.add(entry);
    } else {
      throw new Error(`${EGRESS_ALLOW_ENV}: '${raw}' is not a host name, an IP address or a CIDR`);
    }
  }
  return allow;
}

/** What a URL may be fetched as: `trusted` (the operator's) skips every check. */
export interface Destination {
  url: URL;
  trusted: boolean;
}

export class EgressPolicy {
  private readonly allow: AllowList;
  /** The allowed subnets as one CIDR matcher (never changed after construction). */
  private readonly allowedSubnets = new BlockList();
  private readonly trustedOrigins: Set<string>;
  private readonly resolve: Resolver;

  constructor(options: EgressOptions = {}) {
    this.allow = parseEgressAllow(options.allow ?? []);
    for (const s of this.allow.subnets)
      this.allowedSubnets.addSubnet(s.address, s.prefix, s.family === 4 ? "ipv4" : "ipv6");
    this.trustedOrigins = new Set(
      (options.trusted ?? []).flatMap((u) => {
        try {
          return [new URL(u).origin];
        } catch {
          return [];
        }
      }),
    );
    this.resolve = options.resolve ?? systemResolver;
  }

  isTrusted(url: URL): boolean {
    return this.trustedOrigins.has(url.origin);
  }

  private hostAllowed(host: string): boolean {
    return this.allow.hosts.has(host) || this.allow.suffixes.some((s) => host.endsWith(s));
  }

  private addressAllowed(address: string): boolean {
    const family = isIP(address);
    return family !== 0 && this.allowedSubnets.check(address, family === 4 ? "ipv4" : "ipv6");
  }

  private refusal(host: string, address: string, label: string): EgressRefusedError {
    const what = host === address ? address : `${host} (${address})`;
    return new EgressRefusedError(
      `outbound call to ${what} refused: it is a ${label} address; an operator can allow it with ${EGRESS_ALLOW_ENV}`,
    );
  }

  /**
   * Checks what can be checked before connecting: the scheme, and the host when it is an IP
   * address or a loopback name. A host name passes here and is checked again on resolution.
   */
  check(url: URL): Destination {
    if (url.protocol !== "http:" && url.protocol !== "https:")
      throw new EgressRefusedError(`outbound call to ${url.protocol} URL refused: only http and https`);
    if (this.isTrusted(url)) return { url, trusted: true };
    const host = bareHost(url.hostname);
    if (this.hostAllowed(host)) return { url, trusted: false };
    if (isIP(host) !== 0) {
      const label = blockedRange(host);
      if (label !== undefined && !this.addressAllowed(host)) throw this.refusal(host, host, label);
    } else if (host === "localhost" || host.endsWith(".localhost")) {
      throw this.refusal(host, host, "loopback");
    }
    return { url, trusted: false };
  }

  /** Resolves `hostname` and returns its addresses if every one of them may be reached. */
  async resolveChecked(hostname: string): Promise<LookupAddress[]> {
    const host = bareHost(hostname);
    const addresses = isIP(host) !== 0 ? [{ address: host, family: isIP(host) }] : await this.resolve(host);
    if (this.hostAllowed(host)) return addresses;
    if (addresses.length === 0) throw new EgressRefusedError(`outbound call to ${host} refused: no address`);
    // One bad address refuses the name: a connection may go to any of them.
    for (const { address } of addresses) {
      const label = blockedRange(address);
      if (label !== undefined && !this.addressAllowed(address)) throw this.refusal(host, address, label);
    }
    return addresses;
  }

  /** A `lookup` for net/tls.connect that connects only to addresses this policy checked. */
  readonly lookup = (
    hostname: string,
    options: { family?: number | string; all?: boolean },
    callback: (err: Error | null, address: string | LookupAddress[], family?: number) => void,
  ): void => {
    this.resolveChecked(hostname).then(
      (all) => {
        const family =
          options.family === "IPv4" ? 4 : options.family === "IPv6" ? 6 : Number(options.family ?? 0);
        const wanted = family === 4 || family === 6 ? all.filter((a) => a.family === family) : all;
        if (wanted.length === 0) {
          const err = Object.assign(new Error(`getaddrinfo ENOTFOUND ${hostname}`), { code: "ENOTFOUND" });
          callback(err, "");
        } else if (options.all) callback(null, wanted);
        else callback(null, wanted[0]!.address, wanted[0]!.family);
      },
      (err: Error) => callback(err, ""),
    );
  };
}
