import type { DescService } from "@bufbuild/protobuf";
import type { Client, Transport } from "@connectrpc/connect";

export { BillingService } from "./gen/parcours/billing/v1/billing_pb.js";
export { DirectoryService } from "./gen/parcours/directory/v1/directory_pb.js";
export { ExpertiseService } from "./gen/parcours/expertise/v1/expertise_pb.js";
export { SchedulingService } from "./gen/parcours/scheduling/v1/scheduling_pb.js";
export { BadRequestSchema, ErrorInfoSchema } from "./gen/google/rpc/error_details_pb.js";

/** Where a Parcours service is and who calls it. */
export interface ParcoursConnectionOptions {
  /** `host:port` of the service, e.g. `127.0.0.1:50052` for scheduling under `make run`. */
  address: string;
  /** PEM file of the hub's CA (`.data/pki/ca.pem` under `make run`). */
  ca: string;
  /** PEM client certificate of the calling establishment (its CN is the FINESS). */
  cert: string;
  /** PEM private key of that certificate. */
  key: string;
  /**
   * The acting person's bearer token (a Pro Santé Connect-shaped ES256 JWT), or a function returning a
   * current one before each call. Omit it only for calls an establishment makes on its own behalf.
   */
  token?: string | (() => string | Promise<string>);
}

/** A connection to one Parcours service. */
export interface ParcoursConnection {
  transport: Transport;
  /** A typed client of a service of this connection, e.g. `client(SchedulingService)`. */
  client<T extends DescService>(service: T): Client<T>;
  /** Close the HTTP/2 connection (a script exits once every connection is closed). */
  close(): void;
}

/** Connect to one Parcours service: gRPC over HTTP/2 with mutual TLS and the bearer token on every call. */
export declare function connectParcours(options: ParcoursConnectionOptions): ParcoursConnection;
