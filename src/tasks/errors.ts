// Errors the control plane reports to API clients: an HTTP status and Trove's error name.
export type FaultName =
  | 'badRequest' | 'unauthorized' | 'forbidden' | 'itemNotFound' | 'badMethod' | 'conflictingRequest'
  | 'requestEntityTooLarge' | 'unprocessableEntity' | 'overLimit' | 'notImplemented' | 'instanceFault' | 'serviceUnavailable';

export class ServiceError extends Error {
  constructor(readonly status: number, readonly fault: FaultName, message: string) {
    super(message);
    this.name = 'ServiceError';
  }
}

export const badRequest = (m: string): ServiceError => new ServiceError(400, 'badRequest', m);
export const notFound = (m: string): ServiceError => new ServiceError(404, 'itemNotFound', m);
export const conflict = (m: string): ServiceError => new ServiceError(409, 'conflictingRequest', m);
export const unprocessable = (m: string): ServiceError => new ServiceError(422, 'unprocessableEntity', m);
export const notImplemented = (m: string): ServiceError => new ServiceError(501, 'notImplemented', m);
export const overLimit = (m: string): ServiceError => new ServiceError(413, 'overLimit', m);
