// Options of the compute drivers' tools: `couchtrove image build` (the guest image of the docker and
// swarm drivers). The server's own compute settings (compute_driver, docker_host, docker_image,
// docker_publish_address) live in its INI file: see src/config/server.ts and docs/compute.md.
import { parsers, type OptionSpec } from '../option.js';

const G = 'Compute';

export const computeOptions = {
  dockerHost: {
    flag: 'docker-host', arg: 'URL', group: G, env: 'COUCHTROVE_DOCKER_HOST', parse: parsers.string,
    description: 'Docker Engine API endpoint: unix:///path/docker.sock or tcp://host:port (default DOCKER_HOST, else unix:///var/run/docker.sock)',
  },
  imageTag: {
    flag: 'tag', arg: 'NAME', group: G, default: 'couchtrove-guest:latest', parse: parsers.string,
    description: 'Name:tag of the guest image to build',
  },
  imageBase: {
    flag: 'base', arg: 'IMAGE', group: G, default: 'debian:bookworm-slim', parse: parsers.string,
    description: 'Debian 12 base image of the guest image (tests use a debootstrapped couchtrove-base:bookworm: scripts/docker/base-image.sh)',
  },
  couchdbHome: {
    flag: 'couchdb-home', arg: 'DIR', group: G, env: 'COUCHDB_HOME', parse: parsers.absolutePath,
    description: 'An Apache CouchDB 3.x release directory to put in the image (wins over --couchdb-image)',
  },
  couchdbImage: {
    flag: 'couchdb-image', arg: 'IMAGE', group: G, parse: parsers.string,
    description: 'Image whose /opt/couchdb is the CouchDB release (production: apache/couchdb:3.5). Without it or --couchdb-home: the development engine',
  },
  nodeImage: {
    flag: 'node-image', arg: 'IMAGE', group: G, parse: parsers.string,
    description: "Image whose /usr/local/bin/node is Node.js >= 20 (production: node:20-bookworm-slim). Default: this host's node binary",
  },
} satisfies Record<string, OptionSpec<unknown>>;
