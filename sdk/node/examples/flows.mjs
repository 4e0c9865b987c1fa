// Books a teleconsultation and creates a téléexpertise request, as a hospital information system does from
// Node.js. The README's example is this file; `make test` runs it against the real services
// (tests/integrator/test_node_client.py). Its defaults are the addresses and files of `make run`.
//
//   PARCOURS_TOKEN=$(.venv/bin/python -m services.devstack.tokens mint --rpps 10000000101) \
//     node build/sdk/node/examples/flows.mjs
//
// It prints one JSON object: the appointment, the refusal of a second booking of the same slot, the request.
import { randomUUID } from "node:crypto";
import { Code, ConnectError } from "@connectrpc/connect";
import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { connectParcours, ErrorInfoSchema, ExpertiseService, SchedulingService } from "../index.js";
import { Appointment_State } from "../gen/parcours/scheduling/v1/scheduling_pb.js";
import { TeleexpertiseRequest_State, Urgency } from "../gen/parcours/expertise/v1/expertise_pb.js";
import { Specialty } from "../gen/parcours/type/v1/practice_pb.js";

const env = process.env;
const pki = env.PARCOURS_PKI_DIR ?? ".data/pki";
const finess = env.PARCOURS_FINESS ?? "420000017"; // CH des Monts du Forez, GHT Loire
const token = env.PARCOURS_TOKEN; // the acting practitioner's token
if (!token) throw new Error("set PARCOURS_TOKEN to a practitioner's bearer token");
// A demo patient known at the establishment (services/directory/demo.py, the first of DEMO_PATIENTS).
const patient = env.PARCOURS_PATIENT ?? "patients/06864c6a-eec8-519a-8a96-7c93920150b2";
const identity = {
  ca: `${pki}/ca.pem`,
  cert: `${pki}/establishment-${finess}.pem`,
  key: `${pki}/establishment-${finess}-key.pem`,
  token,
};

const scheduling = connectParcours({ ...identity, address: env.PARCOURS_SCHEDULING_ADDRESS ?? "127.0.0.1:50052" });
const expertise = connectParcours({ ...identity, address: env.PARCOURS_EXPERTISE_ADDRESS ?? "127.0.0.1:50053" });
try {
  const agendas = scheduling.client(SchedulingService);

  // 1. A teleconsultation: the earliest free general-medicine slot (or a given practitioner's), booked for
  // the patient. The request id makes the booking idempotent: a retry returns the same appointment.
  const { slots } = await agendas.searchSlots({
    specialty: Specialty.GENERAL_MEDICINE,
    practitioner: env.PARCOURS_TELECONSULTANT ?? "",
    startTime: timestampFromDate(new Date()),
    pageSize: 1,
  });
  if (slots.length === 0) throw new Error("no free slot");
  /** @param {string} requestId */
  const book = (requestId) =>
    agendas.bookAppointment({ requestId, target: { case: "slot", value: slots[0].name }, patient });
  const requestId = randomUUID();
  const { appointment } = await book(requestId);
  if (!appointment) throw new Error("BookAppointment answered no appointment");
  const again = await book(requestId);

  // A second booking of the same slot is refused; the stable reason travels as a google.rpc.ErrorInfo.
  let refusal = null;
  try {
    await book(randomUUID());
  } catch (error) {
    const failure = ConnectError.from(error);
    refusal = { code: Code[failure.code], reason: failure.findDetails(ErrorInfoSchema)[0]?.reason ?? "" };
  }

  // 2. A téléexpertise: a dermatology opinion, routed by the hub to the dermatology pool of the GHT.
  const { teleexpertiseRequest: request } = await expertise.client(ExpertiseService).createTeleexpertiseRequest({
    requestId: randomUUID(),
    teleexpertiseRequest: {
      patient,
      patientConsent: true,
      target: { case: "specialty", value: Specialty.DERMATOLOGY },
      question: "Lésion pigmentée du dos évolutive : exérèse ?",
      clinicalContext: "Lésion de 8 mm apparue il y a 6 mois, asymétrique.",
      urgency: Urgency.ROUTINE,
    },
  });
  if (!request) throw new Error("CreateTeleexpertiseRequest answered no request");

  console.log(
    JSON.stringify({
      appointment: {
        name: appointment.name,
        state: Appointment_State[appointment.state],
        fhirStatus: appointment.fhirStatus,
        practitioner: appointment.practitioner,
        start: appointment.startTime ? timestampDate(appointment.startTime).toISOString() : null,
        sameOnRetry: again.appointment?.name === appointment.name,
      },
      refusal,
      teleexpertise: {
        name: request.name,
        state: TeleexpertiseRequest_State[request.state],
        requester: request.requester,
        candidates: request.candidates.length,
      },
    }),
  );
} finally {
  scheduling.close();
  expertise.close();
}
