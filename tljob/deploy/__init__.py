"""KubeRay manifests from a job config (pure: no Ray, no TensorFlow).

``render`` turns a job config (or a sweep file) into the ServiceAccount, ConfigMap and
RayJob that run it, sized from the config's ``scaling`` section; ``options`` holds what the
command line adds (image, pod sizes, deadlines, cleanup); ``refusals`` what cannot run as
asked (exit 2); ``pods`` the pod templates;
``yaml_out`` writes them as commented YAML; ``validate`` checks manifests against the
KubeRay CRD schemas and the operator's own rules; ``kustomize`` writes and composes the
``k8s/`` tree (a base and its overlays).
"""
