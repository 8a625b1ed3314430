"""The one ``Definitions`` object of the project (``workspace.yaml`` points here).

Each domain exports its own assets, checks and jobs (``cosmos_assets/<domain>/definitions.py``); this
module merges them and adds what depends on the profile: sensors, resources and the executor.
"""


import os

import dagster as dg

# The domains' modules, not their `defs`: Dagster loads the one Definitions object found at module scope here.
from cosmos_assets.controls import definitions as controls
from cosmos_assets.critic_training import definitions as critic_training
from cosmos_assets.curation import definitions as curation
from cosmos_assets.settings import cosmos_home, cosmos_profile
from cosmos_assets.synthetic import definitions as synthetic
from cosmos_assets.text_to_image import definitions as text_to_image
from cosmos_assets.training import definitions as training
from resources.synthetic import SyntheticSettings
from sensors import generation_round_sensor, synthetic_batch_sensor
from cosmos_assets.models.catalog import DEFAULT_MODELS, PREDICT2_T2I
from cosmos_assets.models.feature_spaces import I3D_WEIGHTS_ENV, INCEPTION_WEIGHTS_ENV
from resources import CosmosStorage, EmbedderResource, ShotDetectorResource, VisionLanguageResource
from resources.generator import ImageGeneratorResource, VideoGeneratorResource
from resources.text_to_image import TextToImageSettings
from sensors.text_to_image import text_to_image_sensor
from resources.training import TrainerResource
from resources.k8s import with_kubernetes_executor
from resources.storage import ParquetTableIOManager
from cosmos_assets.common.artefacts import OBJECT_STORE_ENV
from resources.landing import FIRST_BATCH_FILES_ENV, LandingZoneSettings
from resources.retraining import RetrainingSettings
from sensors import curated_dataset_sensor, landing_zone_sensor
from sensors.critic_training import critic_labels_sensor, critic_training_sensor
from sensors.training import checkpoint_sensor, retraining_sensor
from resources.critic_training import CriticTrainingSettings


def model_resources(profile: str, home: str) -> dict:
    """Which model each role uses. ``local``: packaged real weights where they exist (EfficientNet-Lite0,
    MiniLM) and tiny random-weight checkpoints where only a large model would do (the VLM). ``gpu`` and
    ``k8s``: the real Cosmos models, from local directories or the Hugging Face cache; COSMOS_* variables
    point them elsewhere without code changes."""
    env = os.environ.get
    device = env("COSMOS_DEVICE", "auto")
    local = profile == "local"
    endpoint = env("COSMOS_VLM_ENDPOINT")
    vlm = VisionLanguageResource(
        home=home,
        device=device,
        backend="endpoint" if endpoint else "transformers",
        model=env("COSMOS_VLM_MODEL", "tiny:vlm" if local else DEFAULT_MODELS["vlm"]),
        revision=env("COSMOS_VLM_REVISION"),
        endpoint_url=endpoint,
        # Secrets only through the environment: EnvVar keeps the value out of the UI and run config.
        endpoint_api_key=dg.EnvVar("COSMOS_VLM_API_KEY") if env("COSMOS_VLM_API_KEY") else None,
    )
    embedders = EmbedderResource(
        home=home,
        device=device,
        video_backend=env("COSMOS_VIDEO_EMBEDDER", "efficientnet" if local else "siglip"),
        video_model=env("COSMOS_VIDEO_EMBEDDER_MODEL", DEFAULT_MODELS["video_embedder"]),
        # FID / FVD only where the user supplies the feature networks' weights (never downloaded).
        inception_weights=env(INCEPTION_WEIGHTS_ENV),
        i3d_weights=env(I3D_WEIGHTS_ENV),
    )
    generator_kind = env("COSMOS_GENERATOR", "transfer2.5" if local else "predict2")
    generator = VideoGeneratorResource(
        home=home,
        kind=generator_kind,
        model=env("COSMOS_GENERATOR_MODEL", f"tiny:{generator_kind}" if local else DEFAULT_MODELS[generator_kind]),
        revision=env("COSMOS_GENERATOR_REVISION"),
        device=device,
    )
    trainer_kind = env("COSMOS_TRAINER_KIND", "predict2.5")  # predict2 (EDM LoRA), predict2.5 or transfer2.5
    trainer = TrainerResource(
        home=home,
        kind=trainer_kind,
        base_model=env("COSMOS_TRAINER_BASE_MODEL", f"tiny:{trainer_kind}" if local else DEFAULT_MODELS[trainer_kind]),
        device=device,
        # The VLM judges whether each evaluation video matches its prompt; COSMOS_PROMPT_ALIGNMENT=0 leaves it out.
        vlm=vlm if env("COSMOS_PROMPT_ALIGNMENT", "1") != "0" else None,
        # A laptop trains the tiny model for a few steps on small clips; the GPU profiles use cookbook sizes.
        **({"steps": 4, "warmup_steps": 2, "save_interval": 2, "frames": 9, "height": 32, "width": 48,
            "evaluation_steps": 2, "evaluation_clips": 2} if local else {}),
    )
    # Predict2 Text2Image: a laptop makes small images in a few steps with the tiny model; GPU profiles use its defaults.
    image_generator = ImageGeneratorResource(
        home=home,
        model=env("COSMOS_IMAGE_GENERATOR_MODEL", "tiny:predict2-t2i" if local else DEFAULT_MODELS[PREDICT2_T2I]),
        revision=env("COSMOS_IMAGE_GENERATOR_REVISION"),
        device=device,
        **({"steps": 4, "height": 96, "width": 160} if local else {}),
    )
    retraining = RetrainingSettings(min_new_samples=int(env("COSMOS_RETRAIN_MIN_NEW_SAMPLES", "2" if local else "500")))
    return {"vlm": vlm, "embedders": embedders, "generator": generator, "trainer": trainer, "retraining": retraining,
            "image_generator": image_generator}


def synthetic_settings(profile: str) -> SyntheticSettings:
    """The synthetic loop per profile: ``local`` renders weather over real clips on the CPU and scores with the
    metric critic at demo size; ``gpu`` / ``k8s`` generate with the `generator` resource (Cosmos Transfer 2.5 /
    Predict2) at 720p-class size and critique with the Reason VLM. COSMOS_SYNTHETIC_BACKEND / COSMOS_CRITIC
    choose otherwise; run config on the assets overrides per run."""
    env = os.environ.get
    local = profile == "local"
    return SyntheticSettings(
        generator_backend=env("COSMOS_SYNTHETIC_BACKEND", "classical" if local else "generator"),
        critic=env("COSMOS_CRITIC", "metric" if local else "reason"),
        critic_model=env("COSMOS_CRITIC_MODEL", "tiny:cosmos3" if local else DEFAULT_MODELS["cosmos3"]),
        **({} if local else {"max_width": 1280, "seconds": 5.8}),  # 1280 x 720 (704), 93 frames at 16 fps
        inbox_settle_seconds=float(env("COSMOS_SETTLE_SECONDS", "10")),
    )


SELF_SUPERVISED_ENV = "COSMOS_SELF_SUPERVISED_LABELS"


def critic_training_settings(profile: str) -> CriticTrainingSettings:
    """The critic loop per profile: ``local`` trains the feature critic on self-supervised labels of a few curated
    clips and retrains after 60 new labels (a few videos' worth: fewer teach it nothing); ``gpu`` / ``k8s`` tune the Reason model (``vlm`` resource) with LoRA
    once 200 labels are new. COSMOS_SELF_SUPERVISED_LABELS=0 turns the derived labels off (landed labels still count)."""
    env = os.environ.get
    local = profile == "local"
    return CriticTrainingSettings(
        backend=env("COSMOS_CRITIC_BACKEND", "feature" if local else "reason"),
        min_new_labels=int(env("COSMOS_CRITIC_MIN_NEW_LABELS", "60" if local else "200")),
        self_supervised=env(SELF_SUPERVISED_ENV, "1") not in ("0", "false", "no", "off"),
        self_supervised_clips=24 if local else 256,
        label_settle_seconds=float(env("COSMOS_SETTLE_SECONDS", "10")),
        grpo_steps=int(env("COSMOS_CRITIC_GRPO_STEPS", "0")),
    )


def text_to_image_settings(profile: str) -> TextToImageSettings:
    """The text-to-image loop per profile: prompt files dropped in $COSMOS_HOME/prompt_inbox start rounds everywhere;
    images for every curated dataset round only where COSMOS_T2I_DATASET_ROUNDS=1 (off by default: a laptop's
    dataset rounds stay as fast as before). ``local`` critiques with the image metric critic, ``gpu`` / ``k8s`` with
    the Reason VLM (COSMOS_IMAGE_CRITIC chooses otherwise)."""
    env = os.environ.get
    return TextToImageSettings(
        dataset_rounds=env("COSMOS_T2I_DATASET_ROUNDS", "0") in ("1", "true", "yes", "on"),
        critic=env("COSMOS_IMAGE_CRITIC", "metric" if profile == "local" else "reason"),
        prompt_settle_seconds=float(env("COSMOS_SETTLE_SECONDS", "10")),
    )


def object_store_url(profile: str) -> str | None:
    """``COSMOS_OBJECT_STORE_URL`` puts every artefact, table and the vector store on that store, in any
    profile. The k8s profile needs it: its step pods share no disk."""
    url = os.environ.get(OBJECT_STORE_ENV) or None
    if profile == "k8s" and not url:
        raise ValueError(f"the k8s profile keeps artefacts on object storage: set {OBJECT_STORE_ENV} "
                         "(e.g. s3://<bucket>/<prefix>; deploy/README.md, step 4)")
    return url


def build_definitions(profile: str | None = None) -> dg.Definitions:
    profile = profile or cosmos_profile()
    home = str(cosmos_home())
    store_url = object_store_url(profile)
    # Locally every step of a run shares one process, so a model is loaded once per run;
    # the k8s profile gives each step its own pod instead (added below, sized per asset).
    executor = dg.in_process_executor if profile in ("local", "gpu") else None
    profile_defs = dg.Definitions(
        sensors=[landing_zone_sensor, curated_dataset_sensor, generation_round_sensor, synthetic_batch_sensor, retraining_sensor,
                 checkpoint_sensor, critic_labels_sensor, critic_training_sensor, text_to_image_sensor],
        executor=executor,
        resources={
            "io_manager": ParquetTableIOManager(home=home, object_store_url=store_url),
            "storage": CosmosStorage(home=home, object_store_url=store_url),
            "synthetic": synthetic_settings(profile),
            "critic_training": critic_training_settings(profile),
            "text_to_image": text_to_image_settings(profile),
            "shot_detector": ShotDetectorResource(device=os.environ.get("COSMOS_DEVICE", "auto")),
            **model_resources(profile, home),
            "landing_zone": LandingZoneSettings(
                settle_seconds=float(os.environ.get("COSMOS_SETTLE_SECONDS", "10")),
                # `cosmos demo` sets it to 1: the smallest sample's clips first.
                first_batch_files=int(os.environ.get(FIRST_BATCH_FILES_ENV, "0")),
            ),
        },
    )
    defs = dg.Definitions.merge(curation.defs, synthetic.defs, controls.defs, training.defs, critic_training.defs,
                                text_to_image.defs, profile_defs)
    return with_kubernetes_executor(defs) if profile == "k8s" else defs


defs = build_definitions()
