// `couchtrove image build`: the guest image of the docker and swarm compute drivers (image/Dockerfile),
// through the Docker Engine API. Prints the tag, image id, engine and build time.
import { defineCommand, type AnyCommand } from '../../command.js';

export const imageCommands: AnyCommand[] = [
  defineCommand({
    path: ['image', 'build'],
    summary: 'Build the guest image (CouchDB, Node.js and the couchtrove agent) with the Docker Engine API',
    required: [],
    optional: ['dockerHost', 'imageTag', 'imageBase', 'couchdbHome', 'couchdbImage', 'nodeImage', 'json'],
    run: async (o, io) => {
      const { connectDocker } = await import('../../../compute/docker/connect.js');
      const { buildGuestImage, DEFAULT_GUEST_IMAGE } = await import('../../../compute/docker/image.js');
      const docker = connectDocker(o.dockerHost);
      const r = await buildGuestImage(docker, {
        tag: o.imageTag ?? DEFAULT_GUEST_IMAGE,
        base: o.imageBase ?? 'debian:bookworm-slim',
        ...(o.couchdbHome ? { couchdbHome: o.couchdbHome } : {}),
        ...(o.couchdbImage ? { couchdbImage: o.couchdbImage } : {}),
        ...(o.nodeImage ? { nodeImage: o.nodeImage } : {}),
        log: (l) => void io.stderr.write(`${l}\n`),
      });
      if (o.json) io.stdout.write(`${JSON.stringify(r)}\n`);
      else io.stdout.write(`built ${r.tag} (${r.id}, engine ${r.engine}) in ${r.seconds.toFixed(1)} s\n`);
      return 0;
    },
  }),
];
