/**
 * Reading request headers from whatever a framework hands over: a fetch `Headers`, Node's
 * `IncomingHttpHeaders` (Express, Fastify, node:http), a plain record, or a lookup function.
 */

/** Headers as any Node.js framework has them. */
export type HeaderSource =
  | { get(name: string): string | null }
  | Readonly<Record<string, string | readonly string[] | undefined>>
  | ((name: string) => string | undefined);

/** A lookup by lower-case header name; a repeated header gives its first value. */
export function headerGetter(source: HeaderSource): (name: string) => string | undefined {
  if (typeof source === "function") {
    return source;
  }
  if (typeof (source as { get?: unknown }).get === "function") {
    const headers = source as { get(name: string): string | null };
    return (name) => headers.get(name) ?? undefined;
  }
  const record = source as Readonly<Record<string, string | readonly string[] | undefined>>;
  return (name) => {
    let value = record[name];
    if (value === undefined) {
      const key = Object.keys(record).find((k) => k.toLowerCase() === name);
      value = key === undefined ? undefined : record[key];
    }
    return typeof value === "string" ? value : value?.[0];
  };
}
