export const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
export const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
export const DOCKER_MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json';
export const DOCKER_MANIFEST_LIST = 'application/vnd.docker.distribution.manifest.list.v2+json';
export const OCI_CONFIG = 'application/vnd.oci.image.config.v1+json';

/** The config media type `gl-oci` gives Garden Linux artifact manifests (spec §3). */
export const GARDENLINUX_CONFIG = 'application/vnd.unknown.config.v1+json';

export const IMAGE_MANIFEST_TYPES: readonly string[] = [OCI_MANIFEST, DOCKER_MANIFEST];
export const INDEX_TYPES: readonly string[] = [OCI_INDEX, DOCKER_MANIFEST_LIST];

/** Sent on every manifest read: registries answer 404 for a type the Accept header lacks (spec §5). */
export const MANIFEST_ACCEPT = [OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST].join(', ');

/** Registries accept manifests up to 4 MiB (distribution, ECR); larger ones are refused before any request. */
export const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;
