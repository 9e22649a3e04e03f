// The positioning.v1 client over gRPC-Web, on the origin that served the page (no second API).
import { Code, ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { Positioning } from "./gen/positioning/v1/positioning_pb.js";

export type PositioningClient = Client<typeof Positioning>;

const TOKEN_KEY = "positioning.token";

/** The bearer token, kept for this browser tab only (sessionStorage). */
export function getToken(): string {
  return sessionStorage.getItem(TOKEN_KEY) ?? "";
}

export function setToken(token: string): void {
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
}

const auth: Interceptor = (next) => async (req) => {
  const token = getToken();
  if (token) req.header.set("authorization", `Bearer ${token}`);
  return next(req);
};

export function makeClient(baseUrl: string = location.origin): PositioningClient {
  const transport = createGrpcWebTransport({ baseUrl, useBinaryFormat: true, interceptors: [auth] });
  return createClient(Positioning, transport);
}

/** The server cannot be reached (as opposed to a call it refused). */
export function isUnreachable(e: unknown): boolean {
  const c = ConnectError.from(e).code;
  return c === Code.Unavailable || c === Code.Unknown || c === Code.Internal || c === Code.DeadlineExceeded;
}

/** A call the server refused, in the service's own words, with what to do where the code says it. */
export function describeError(e: unknown): string {
  const err = ConnectError.from(e);
  switch (err.code) {
    case Code.Unauthenticated:
      return `Not signed in: ${err.rawMessage}. Enter your token (Sign in).`;
    case Code.PermissionDenied:
      return `Not allowed: ${err.rawMessage}. This needs the operator role: sign in with an operator token.`;
    case Code.Unavailable:
      return `Unavailable: ${err.rawMessage}`;
    default:
      return err.rawMessage || String(e);
  }
}

export function isAborted(e: unknown): boolean {
  return ConnectError.from(e).code === Code.Canceled;
}

export { Code, ConnectError };
