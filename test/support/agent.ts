/**
 * A browserless user agent for tests and benchmarks: keeps cookies per host, follows redirects
 * when asked, and reads forms (action + hidden fields) out of Tessera's pages.
 */
export interface AgentResponse {
  status: number;
  url: string;
  location: string | null;
  headers: Headers;
  body: string;
}

export class Agent {
  readonly cookies = new Map<string, string>();

  cookieHeader(): string {
    return [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; ');
  }

  private store(headers: Headers): void {
    for (const line of headers.getSetCookie()) {
      const [pair] = line.split(';');
      const eq = pair!.indexOf('=');
      const name = pair!.slice(0, eq).trim();
      const value = pair!.slice(eq + 1).trim();
      const expired = /expires=Thu, 01 Jan 1970/i.test(line) || /max-age=0/i.test(line);
      if (expired || value === '') this.cookies.delete(name);
      else this.cookies.set(name, value);
    }
  }

  async request(url: string, init: { method?: string; form?: Record<string, string>; body?: string; headers?: Record<string, string> } = {}): Promise<AgentResponse> {
    const headers: Record<string, string> = { ...(init.headers ?? {}) };
    if (this.cookies.size) headers.cookie = this.cookieHeader();
    let body = init.body;
    if (init.form) {
      body = new URLSearchParams(init.form).toString();
      headers['content-type'] = 'application/x-www-form-urlencoded';
    }
    const res = await fetch(url, { method: init.method ?? (body !== undefined ? 'POST' : 'GET'), headers, body, redirect: 'manual' });
    this.store(res.headers);
    const location = res.headers.get('location');
    return { status: res.status, url, location: location ? new URL(location, url).href : null, headers: res.headers, body: await res.text() };
  }

  get(url: string): Promise<AgentResponse> {
    return this.request(url);
  }

  post(url: string, form: Record<string, string>): Promise<AgentResponse> {
    return this.request(url, { method: 'POST', form });
  }

  /** Follows redirects until a page (non-3xx) or a URL matching stopAt. */
  async follow(response: AgentResponse, stopAt?: (url: string) => boolean): Promise<AgentResponse> {
    let current = response;
    for (let hops = 0; current.location && current.status >= 300 && current.status < 400; hops++) {
      if (hops > 20) throw new Error('too many redirects');
      if (stopAt?.(current.location)) return current;
      current = await this.get(current.location);
    }
    return current;
  }
}

export interface PageForm {
  action: string;
  fields: Record<string, string>;
}

/** The forms of a page, by action path, with their hidden fields. */
export function formsOf(page: AgentResponse): PageForm[] {
  const forms: PageForm[] = [];
  for (const match of page.body.matchAll(/<form\b[^>]*action="([^"]+)"[^>]*>([\s\S]*?)<\/form>/g)) {
    const fields: Record<string, string> = {};
    for (const input of match[2]!.matchAll(/<input\b[^>]*type="hidden"[^>]*>/g)) {
      const name = /name="([^"]+)"/.exec(input[0])?.[1];
      const value = /value="([^"]*)"/.exec(input[0])?.[1] ?? '';
      if (name) fields[name] = decodeEntities(value);
    }
    forms.push({ action: new URL(decodeEntities(match[1]!), page.url).href, fields });
  }
  return forms;
}

export function formFor(page: AgentResponse, actionSuffix: string): PageForm {
  const form = formsOf(page).find((f) => new URL(f.action).pathname.endsWith(actionSuffix));
  if (!form) throw new Error(`no form ending in ${actionSuffix} on ${page.url} (status ${page.status}): ${page.body.slice(0, 300)}`);
  return form;
}

function decodeEntities(s: string): string {
  return s.replace(/&amp;/g, '&').replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&#34;/g, '"').replace(/&#39;/g, "'").replace(/&quot;/g, '"');
}
