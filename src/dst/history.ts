// What the clients learned: which agents exist, which operations were acknowledged (and so must
// survive any crash), how many times each non-idempotent request reached a server, and the
// per-agent histories (call and return on one logical clock) the linearizability checker reads.
import { assert } from "../core/assert.ts";
import type {
  BoundedMapInput,
  BoundedMapOutput,
  ConversationInput,
  ConversationOutput,
  KvInput,
  KvOutput,
  Operation,
  RegisterInput,
  RegisterOutput,
} from "./linearizability.ts";

export interface AgentFacts {
  id: string;
  /** Short name for the trace: a0, a1, ... */
  name: string;
  /** A delete was sent (it may or may not have happened): the agent is no longer checked for presence. */
  deleteSent: boolean;
  /** Logical time the delete was sent, or null. */
  deleteSentAt: number | null;
  /** A delete was acknowledged: the agent must stay gone. */
  deleteAcked: boolean;
}

export interface AckedSend {
  agentId: string;
  token: string;
  messageIds: string[];
  appendOk: boolean;
  archivalOk: boolean;
  /** The memory tool created the block `nb_<token>`. */
  newblockOk: boolean;
  /** The agent an async message of this send went to, once the tool said it was sent. */
  tellTo: string | null;
}

export interface AckedPassage {
  agentId: string;
  token: string;
  passageIds: string[];
  /** Logical time of the acknowledgement: a search called after it must find the passage. */
  ackedAt: number;
}

export interface ConversationFacts {
  id: string;
  agentId: string;
  /** Summary writes and reads, context-id appends (its turns) and what PATCH and reads answered. */
  ops: Operation<ConversationInput, ConversationOutput>[];
}

export interface ArchiveFacts {
  id: string;
  /** Passages whose insert was acknowledged, and when. */
  passages: { token: string; passageId: string; ackedAt: number }[];
}

export interface ImportFacts {
  /** The name the import gave its agent (unique per import op). */
  name: string;
  /** Acknowledged (its agents must exist), rejected (nothing of it may exist), or unknown. */
  outcome: "acked" | "rejected" | "unknown";
  agentIds: string[];
}

export class History {
  private clock = 0;
  private opIds = 0;
  readonly agents: AgentFacts[] = [];
  readonly agentsById = new Map<string, AgentFacts>();
  readonly ackedSends: AckedSend[] = [];
  readonly ackedPassages: AckedPassage[] = [];
  /** Requests carrying each token that reached a server (the upper bound on its effects). */
  readonly deliveries = new Map<string, number>();
  readonly registerOps = new Map<string, Operation<RegisterInput, RegisterOutput>[]>();
  readonly kvOps: Operation<KvInput, KvOutput>[] = [];
  /** Working-memory puts per agent, by size, for the limits. */
  readonly workingSizeOps = new Map<string, Operation<BoundedMapInput, BoundedMapOutput>[]>();
  readonly conversations: ConversationFacts[] = [];
  readonly archives: ArchiveFacts[] = [];
  readonly imports: ImportFacts[] = [];
  readonly violations: string[] = [];

  /** The next tick of the logical clock on which calls and returns are ordered. */
  tick(): number {
    return ++this.clock;
  }

  nextOpId(): number {
    return ++this.opIds;
  }

  addAgent(id: string): AgentFacts {
    assert(!this.agentsById.has(id), "an agent id was handed out twice");
    const facts: AgentFacts = {
      id,
      name: `a${this.agents.length}`,
      deleteSent: false,
      deleteSentAt: null,
      deleteAcked: false,
    };
    this.agents.push(facts);
    this.agentsById.set(id, facts);
    this.registerOps.set(id, []);
    return facts;
  }

  nameOf(agentId: string): string {
    return this.agentsById.get(agentId)?.name ?? "a?";
  }

  /** Agents clients may still pick. */
  liveAgents(): AgentFacts[] {
    return this.agents.filter((a) => !a.deleteSent);
  }

  delivered(token: string): void {
    this.deliveries.set(token, (this.deliveries.get(token) ?? 0) + 1);
  }

  violation(text: string): void {
    this.violations.push(text);
  }
}
