/**
 * Values a process keeps for a fixed time (a TTL of 0 keeps nothing). Bounded: when full it starts
 * over, so a flood of distinct keys costs queries, never memory.
 */
export class ExpiringCache<V> {
  private readonly entries = new Map<string, { value: V; until: number }>();

  constructor(
    private readonly ttlMs: number,
    private readonly maxEntries = 10_000,
  ) {}

  /** The kept value, or what `load` finds (kept unless undefined). */
  async get(key: string, load: () => Promise<V | undefined>): Promise<V | undefined> {
    const hit = this.entries.get(key);
    if (hit && hit.until > Date.now()) return hit.value;
    const value = await load();
    if (value === undefined) this.entries.delete(key);
    else if (this.ttlMs > 0) {
      if (this.entries.size >= this.maxEntries) this.entries.clear();
      this.entries.set(key, { value, until: Date.now() + this.ttlMs });
    }
    return value;
  }

  /** Forgets everything: the next get loads afresh (after a change made in this process). */
  clear(): void {
    this.entries.clear();
  }
}
