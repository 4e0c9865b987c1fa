// The Parcours client: one function that opens a connection to a Parcours service the way the hub requires
// it (gRPC over HTTP/2, mutual TLS with the establishment's certificate, the acting person's bearer token),
// and the service descriptors generated from the API (under ./gen, by protoc-gen-es from parcours.binpb).
import { readFileSync } from "node:fs";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";

export { BillingService } from "./gen/parcours/billing/v1/billing_pb.js";
export { DirectoryService } from "./gen/parcours/directory/v1/directory_pb.js";
export { ExpertiseService } from "./gen/parcours/expertise/v1/expertise_pb.js";
export { SchedulingService } from "./gen/parcours/scheduling/v1/scheduling_pb.js";
export { BadRequestSchema, ErrorInfoSchema } from "./gen/google/rpc/error_details_pb.js";

/**
 * Connect to one Parcours service.
 *
 * @param {import("./index.js").ParcoursConnectionOptions} options
 * @returns {import("./index.js").ParcoursConnection}
 */
export function connectParcours({ address, ca, cert, key, token }) {
  const baseUrl = `https://${address}`;
  // One HTTP/2 connection per service, reused by every call; close() ends it so a script can exit.
  const sessions = new Http2SessionManager(baseUrl, undefined, {
    ca: readFileSync(ca),
    cert: readFileSync(cert),
    key: readFileSync(key),
  });
  /** @type {import("@connectrpc/connect").Interceptor[]} */
  const interceptors = [];
  if (token !== undefined) {
    interceptors.push((next) => async (request) => {
      // A function lets a long-running program hand a fresh token to each call (tokens expire).
      const value = typeof token === "function" ? await token() : token;
      request.header.set("authorization", `Bearer ${value}`);
      return next(request);
    });
  }
  const transport = createGrpcTransport({ baseUrl, sessionManager: sessions, interceptors });
  return {
    transport,
    client: (service) => createClient(service, transport),
    close: () => sessions.abort(),
  };
}
