"""Kinds of other projects' CRDs that Wharf writes where a cluster serves them.

lightkube knows only Kubernetes' own kinds; these are declared once here, so that
`lightkube.codecs.from_dict` (apply, observe, dry runs) and listings (prune) know them too.
"""

from __future__ import annotations

from lightkube.generic_resource import create_namespaced_resource

HTTPRoute = create_namespaced_resource("gateway.networking.k8s.io", "v1", "HTTPRoute", "httproutes")
ReferenceGrant = create_namespaced_resource(
    "gateway.networking.k8s.io", "v1beta1", "ReferenceGrant", "referencegrants"
)
IssuedCertificate = create_namespaced_resource(
    "cert-manager.io", "v1", "Certificate", "certificates"
)
# By the cluster's status.apis entry that says it serves them.
BY_API = {
    "gatewayAPI": (HTTPRoute, ReferenceGrant),
    "certManager": (IssuedCertificate,),
}
