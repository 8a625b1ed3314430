"""Which Kubernetes pod class a step needs, declared on its asset.

Each asset decorator carries ``tags=pod_class("gpu-reason-7b")`` (or the class of whatever model it
runs); ``resources/k8s.py`` sizes the classes and, in the ``k8s`` profile, gives every step the pod of
its assets' class. Here only the tag, so assets declare it without importing any Kubernetes code.
"""

POD_CLASS_TAG = "cosmos/pod-class"  # also the label on the step pods, so the UI and kubectl agree


def pod_class(name: str) -> dict[str, str]:
    """The asset tag naming the pod class its step runs in (a key of ``resources.k8s.POD_CLASSES``)."""
    return {POD_CLASS_TAG: name}
