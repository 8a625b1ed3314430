"""Critic labels and training sets: what a user who drops label files, or imports conversations, relies on."""

import csv
import io
import json

import pytest

from cosmos_assets.critic_training.labels import (
    MAX_TEXT_CHARS, LabelRow, detect_layout, make_label, new_labels, parse_label_file, read_label_file,
    resolve_subjects,
)
from cosmos_assets.critic_training.training_set import (
    TrainingSetRecipe, build_training_set, conversation_records, export_conversations, import_conversations,
    parse_prediction, rows_by_side, split_side,
)
from cosmos_assets.models.vlm import CRITIC_SETTINGS
from cosmos_assets.synthetic.critics import ReasonCritic

SAMPLE_LABELS = "labels/videophy2_samples.csv"


def jsonl(*records) -> bytes:
    return "\n".join(r if isinstance(r, str) else json.dumps(r) for r in records).encode()


def csv_bytes(header, *rows) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue().encode()


def test_packaged_videophy2_example_names_the_packaged_sample_videos(samples):
    parsed = read_label_file(samples / SAMPLE_LABELS)

    assert parsed.layout == "videophy2" and parsed.bad == []
    assert {row.subject for row in parsed.rows} == {p.name for p in samples.iterdir() if p.suffix in (".mp4", ".mkv")}
    assert all(row.task == "critique" and row.score == 5 and row.caption for row in parsed.rows)
    resolved, unknown = resolve_subjects(parsed.rows, files={p.name: f"sha-{p.name}" for p in samples.iterdir()})
    assert unknown == [] and all(row.video == f"sha-{row.subject}" for row in resolved)


def test_videophy2_rows_take_pc_as_the_score_and_the_file_name_from_the_url():
    data = csv_bytes(["caption", "video_url", "sa", "pc", "joint", "physics_rules_followed", "action", "category",
                      "is_hard"],
                     ["A ball rolls off a table.", "https://videos.example/set_a/A_ball_rolls%2C_falls.mp4", 5, 2, 0,
                      "[]", "rolling", "object interactions", "True"])
    (row,) = parse_label_file(data, "videophy2_train.csv").rows

    assert (row.task, row.score, row.answer) == ("critique", 2, "2")
    assert row.subject == "A_ball_rolls,_falls.mp4" and row.subject_kind == "file"
    assert row.caption == "A ball rolls off a table."


def test_generic_jsonl_reads_every_task_and_says_what_kind_of_reference_a_column_holds():
    parsed = parse_label_file(jsonl(
        {"video": "walk.mp4", "task": "critique", "score": 4},
        {"clip_id": "clip-1", "task": "plausibility", "answer": "No", "question": "Is this plausible?"},
        {"candidate_id": "cand-9", "task": "vqa", "question": "What colour is the light?", "answer": "red",
         "question_type": "traffic_light"},
        {"file": "road.mp4", "task": "vqa", "question": "Where is the car?", "choices": ["left", "right"],
         "answer": "right"},
    ), "labels.jsonl")

    assert parsed.layout == "generic" and parsed.bad == []
    critique, plausibility, free, choice = parsed.rows
    assert (critique.score, critique.answer, critique.subject_kind) == (4, "4", None)
    assert (plausibility.answer, plausibility.subject_kind) == ("no", "clip")
    assert (free.answer, free.question_type, free.subject_kind) == ("red", "traffic_light", "candidate")
    assert (choice.answer, choice.choices, choice.subject_kind) == ("B", ("left", "right"), "file")


def test_generic_csv_with_choices_separated_by_bars():
    data = csv_bytes(["Video", "Task", "Question", "Answer", "Score", "Choices", "Question_Type"],
                     ["a.mp4", "critique", "", "", "3", "", ""],
                     ["a.mp4", "vqa", "Is it raining?", "a", "", "yes|no", "weather"])
    parsed = parse_label_file(data, "labels.csv")

    assert parsed.layout == "generic" and parsed.bad == []
    assert [(r.task, r.answer) for r in parsed.rows] == [("critique", "3"), ("vqa", "A")]
    assert parsed.rows[1].choices == ("yes", "no") and parsed.rows[0].line == 2


def test_multiple_choice_rows_with_lettered_options_and_the_correct_letter():
    data = csv_bytes(["video", "question", "a", "b", "c", "d", "correct", "type"],
                     ["scene_1.mp4", "What is the weather?", "Sunny", "Rainy", "Snowy", "Foggy", "b", "environment"],
                     ["scene_1.mp4", "How many lanes?", "One", "Two", "", "", "B", "road"])
    parsed = parse_label_file(data, "mcq.csv")

    assert parsed.layout == "multiple_choice" and parsed.bad == []
    weather, lanes = parsed.rows
    assert (weather.task, weather.answer, weather.question_type) == ("vqa", "B", "environment")
    assert weather.choices == ("Sunny", "Rainy", "Snowy", "Foggy") and lanes.choices == ("One", "Two")


def test_a_wts_scene_asks_each_environment_question_of_each_view():
    scene = [{"id": "20230707_12_SN17_T1",
              "overhead_videos": ["view_a.mp4", "view_b.mp4"],
              "environment": [
                  {"question": "What is the road surface?", "a": "Dry", "b": "Wet", "correct": "a"},
                  {"question": "Is it day or night?", "a": "Day", "b": "Night", "correct": "e"},
              ]}]
    parsed = parse_label_file(json.dumps(scene).encode(), "20230707_12_SN17_T1.json")

    assert parsed.layout == "multiple_choice"
    assert [(r.subject, r.answer, r.question_type) for r in parsed.rows] == [
        ("view_a.mp4", "A", "environment"), ("view_b.mp4", "A", "environment")]
    assert {b.error_class for b in parsed.bad} == {"AnswerNotAmongChoices"} and len(parsed.bad) == 2


def test_bad_rows_are_recorded_with_their_class_and_the_good_rows_go_on():
    good = {"video": "a.mp4", "task": "critique", "score": 5}
    parsed = parse_label_file(jsonl(
        good,                                                                           # 1
        '{"video": "a.mp4", "task": ',                                                 # 2 broken JSON
        {"video": "a.mp4", "score": 3},                                                # 3 no task
        {"video": "a.mp4", "task": "caption", "answer": "x"},                          # 4
        {"video": "a.mp4", "task": "critique", "score": 7},                            # 5
        {"video": "a.mp4", "task": "critique", "score": 3.5},                          # 6
        {"video": "a.mp4", "task": "plausibility", "answer": "maybe"},                 # 7
        {"video": "a.mp4", "task": "vqa", "question": "Which?", "choices": ["x", "y", "z", "w"], "answer": "E"},  # 8
        {"video": "a.mp4", "task": "vqa", "question": "q" * (MAX_TEXT_CHARS + 1), "answer": "x"},  # 9
        '["not", "an", "object"]',                                                      # 10
        {"task": "critique", "score": 2},                                              # 11 no video
        good,                                                                           # 12 repeated
        {"video": "b.mp4", "task": "plausibility", "answer": "yes"},                   # 13
    ), "mixed.jsonl")

    assert [(b.line, b.error_class) for b in parsed.bad] == [
        (2, "BadJson"), (3, "MissingField"), (4, "UnknownTask"), (5, "ScoreOutOfRange"), (6, "BadScore"),
        (7, "BadAnswer"), (8, "AnswerNotAmongChoices"), (9, "FieldTooLong"), (10, "NotAnObject"),
        (11, "MissingField"), (12, "DuplicateLabel")]
    assert all(b.file == "mixed.jsonl" and b.message for b in parsed.bad)
    assert [(r.line, r.subject) for r in parsed.rows] == [(1, "a.mp4"), (13, "b.mp4")]


def test_a_csv_row_that_breaks_the_format_is_recorded_and_the_next_rows_are_read():
    data = ("video,task,score\n"
            "a.mp4,critique,4\n"
            '"' + "x" * 200_000 + '",critique,3\n'  # one field beyond what the CSV reader takes
            "b.mp4,critique,5,surplus\n"
            "c.mp4,critique,2\n").encode()
    parsed = parse_label_file(data, "sheet.csv")

    assert [(b.line, b.error_class) for b in parsed.bad] == [(3, "BadCsv"), (4, "BadCsv")]
    assert [(r.line, r.subject) for r in parsed.rows] == [(2, "a.mp4"), (5, "c.mp4")]


def test_files_that_cannot_be_read_as_labels_are_one_bad_row_each(tmp_path):
    not_text = parse_label_file(b"\xff\xfe\x00video", "latin.csv")
    (target := tmp_path / "real.csv").write_bytes(b"video,task,score\na.mp4,critique,4\n")
    (tmp_path / "link.csv").symlink_to(target)
    linked = read_label_file(tmp_path / "link.csv")

    assert [(b.line, b.error_class) for b in not_text.bad] == [(None, "NotUtf8")] and not_text.rows == []
    assert linked.rows == [] and linked.bad[0].line is None  # links are never followed into a label inbox
    assert len(read_label_file(target).rows) == 1


def test_a_file_past_the_row_bound_keeps_its_first_rows_and_says_so():
    data = jsonl(*({"video": f"v{i}.mp4", "task": "critique", "score": 3} for i in range(10)))
    parsed = parse_label_file(data, "big.jsonl", max_rows=4)

    assert len(parsed.rows) == 4 and [b.error_class for b in parsed.bad] == ["TooManyRows"]


def test_the_same_file_under_two_names_gives_the_same_ids_and_counts_once(samples):
    data = (samples / SAMPLE_LABELS).read_bytes()
    first = parse_label_file(data, "batch_1.csv")
    second = parse_label_file(data, "copy of batch_1 (2).csv")

    assert [r.label_id for r in first.rows] == [r.label_id for r in second.rows]
    fresh, duplicates = new_labels(second.rows, {r.label_id for r in first.rows})
    assert fresh == [] and len(duplicates) == len(first.rows)
    assert {r.source for r in duplicates} == {"copy of batch_1 (2).csv"}


def test_the_layout_is_detected_and_can_be_overridden():
    videophy = csv_bytes(["caption", "video_url", "pc"], ["c", "x.mp4", "4"])
    mcq = jsonl({"video": "x.mp4", "question": "q", "options": ["a", "b"], "correct": "A"})

    assert detect_layout(videophy) == "videophy2" and detect_layout(mcq) == "multiple_choice"
    assert detect_layout(csv_bytes(["video", "task", "score"], ["x.mp4", "critique", "4"])) == "generic"
    # Read as generic, the VideoPhy-2 row names no task: the override is obeyed, and the row says why it failed.
    overridden = parse_label_file(videophy, "x.csv", layout="generic")
    assert overridden.layout == "generic" and [b.error_class for b in overridden.bad] == ["MissingField"]


def test_an_unknown_subject_becomes_a_bad_row_and_a_typed_reference_is_looked_up_only_where_it_says():
    rows = parse_label_file(jsonl(
        {"clip_id": "clip-1", "task": "critique", "score": 4},
        {"video": "cand-7", "task": "critique", "score": 2},
        {"video": "uploads/day2/walk.mp4", "task": "critique", "score": 5},
        {"clip_id": "walk.mp4", "task": "critique", "score": 5},
        {"video": "nobody-knows", "task": "critique", "score": 1},
    ), "labels.jsonl").rows
    resolved, bad = resolve_subjects(rows, clips={"clip-1": "source-video-A"}, candidates=["cand-7"],
                                     files={"walk.mp4": "sha-walk"})

    assert [(r.subject_kind, r.video) for r in resolved] == [
        ("clip", "source-video-A"), ("candidate", "cand-7"), ("file", "sha-walk")]
    assert [(b.line, b.error_class) for b in bad] == [(4, "UnknownSubject"), (5, "UnknownSubject")]


def test_label_rows_survive_a_table_round_trip():
    row = make_label("clip-1", "vqa", question="Which lane?", answer="left", choices=["left", "right"],
                     question_type="road", source="x.csv", line=3, subject_kind="clip", video="src")

    assert LabelRow.from_record(row.to_record()) == row


# --- training sets --------------------------------------------------------------------------------------------------

def labelled_videos(videos, per_video=3, offset=0):
    """Resolved critique labels: ``per_video`` labels (different scores) for each video."""
    return [make_label(f"{video}.mp4", "critique", score=1 + (i + offset) % 5, source="t.csv", video=video)
            for video in videos for i in range(per_video)]


def test_the_split_never_puts_one_video_on_both_sides_and_existing_videos_keep_their_side():
    recipe = TrainingSetRecipe(test_fraction=0.3, balance="none")
    before = build_training_set(labelled_videos([f"video-{i}" for i in range(40)]), recipe)
    more = labelled_videos([f"video-{i}" for i in range(40)], offset=3) + labelled_videos(
        [f"video-{i}" for i in range(40, 80)])
    after = build_training_set(before.train + before.test + more, recipe)

    for training_set in (before, after):
        train_videos = {r.video for r in training_set.train}
        test_videos = {r.video for r in training_set.test}
        assert train_videos.isdisjoint(test_videos) and train_videos and test_videos
    assert all(after.sides[video] == side for video, side in before.sides.items())
    assert before.forced == [] and after.version != before.version
    assert rows_by_side(after.records()) == {"train": after.train, "test": after.test}


def test_the_version_depends_on_labels_and_recipe_not_on_their_order():
    rows = labelled_videos([f"video-{i}" for i in range(10)])
    recipe = TrainingSetRecipe()

    assert build_training_set(rows, recipe).version == build_training_set(list(reversed(rows)), recipe).version
    assert build_training_set(rows, recipe).version != build_training_set(
        rows, TrainingSetRecipe(test_fraction=0.5)).version
    assert build_training_set(rows, recipe).version != build_training_set(rows, TrainingSetRecipe(salt="b")).version


def test_a_tiny_set_still_gets_a_test_side():
    videos = [f"video-{i}" for i in range(4)]
    recipe = TrainingSetRecipe(test_fraction=0.01)
    assert {split_side(v, recipe) for v in videos} == {"train"}

    training_set = build_training_set(labelled_videos(videos), recipe)

    assert len(training_set.forced) == 1 and training_set.sides[training_set.forced[0]] == "test"
    assert {r.video for r in training_set.test} == set(training_set.forced)


def scores_skewed_to_four():
    """Like VideoPhy-2: mostly 4s. One video per label, so the split does not group them."""
    scores = [4] * 40 + [3] * 10 + [5] * 6 + [2] * 4 + [1] * 3
    return [make_label(f"v{i}.mp4", "critique", score=s, video=f"v{i}") for i, s in enumerate(scores)]


def class_sizes(rows):
    sizes = {}
    for row in rows:
        sizes[row.score] = sizes.get(row.score, 0) + 1
    return sizes


def test_cap_balancing_limits_each_score_class_to_a_multiple_of_the_rarest_in_train_only():
    recipe = TrainingSetRecipe(test_fraction=0.2, balance="cap", balance_factor=2.0)
    training_set = build_training_set(scores_skewed_to_four(), recipe)
    labelled = training_set.class_counts["train_labelled"]["critique"]
    rarest = min(labelled.values())

    assert all(size <= 2 * rarest for size in class_sizes(training_set.train).values())
    assert class_sizes(training_set.train) == {int(k): min(v, 2 * rarest) for k, v in labelled.items()}
    assert training_set.class_counts["test"]["critique"] == {str(k): v for k, v in
                                                           sorted(class_sizes(training_set.test).items())}


def test_resample_balancing_gives_every_score_the_same_count():
    training_set = build_training_set(scores_skewed_to_four(), TrainingSetRecipe(balance="resample"))
    sizes = class_sizes(training_set.train)

    assert len(set(sizes.values())) == 1 and set(sizes) == {1, 2, 3, 4, 5}


def mixed_rows():
    return [
        make_label("walk.mp4", "critique", score=2, caption="A person walks.", video="w"),
        make_label("clip-7", "plausibility", answer="yes", subject_kind="clip", video="c7"),
        make_label("clip-8", "plausibility", answer="no", subject_kind="clip", video="c8"),
        make_label("road.mp4", "vqa", question="Which lane is the car in?\nLook at the markings.",
                   choices=["left", "middle", "right"], answer="C", question_type="lane", video="r"),
        make_label("road.mp4", "vqa", question="What is on the sign?", answer="Stop", video="r"),
    ]


@pytest.mark.parametrize("mode", ["sft", "grpo"])
def test_export_then_import_gives_back_the_same_labels(tmp_path, mode):
    rows = mixed_rows()
    paths = {row.subject: f"/store/videos/{row.subject}.mp4" for row in rows}
    written = export_conversations(rows, paths, tmp_path / "set.jsonl", mode=mode)
    imported = import_conversations((tmp_path / "set.jsonl").read_bytes(), "set.jsonl")

    assert written == len(rows) and imported.bad == []
    assert [r.label_id for r in imported.rows] == [r.label_id for r in rows]
    assert [(r.task, r.answer, r.score, r.choices, r.question, r.caption) for r in imported.rows] == [
        (r.task, r.answer, r.score, r.choices, r.question if r.task == "vqa" else "", r.caption) for r in rows]


def test_export_asks_exactly_what_the_critic_asks_at_inference_and_grpo_keeps_the_answer_apart():
    critique, plausible, _, choice, _ = mixed_rows()
    sft, grpo = (conversation_records([critique, plausible, choice], lambda r: "v.mp4", mode) for mode in ("sft", "grpo"))

    for record, mode in ((sft[0], "rubric"), (sft[1], "reason")):
        system, question = ReasonCritic(None, CRITIC_SETTINGS, mode=mode).prompts
        assert record["conversations"][0] == {"from": "system", "value": system}
        assert record["conversations"][1] == {"from": "human", "value": f"<video>\n{question}"}
    assert sft[0]["conversations"][2] == {"from": "gpt", "value": "<answer>2</answer>"}
    assert sft[1]["conversations"][2]["value"] == "<answer>No</answer>"  # plausible: no anomalies
    assert sft[2]["conversations"][1]["value"].endswith("A: left\nB: middle\nC: right")
    assert [len(r["conversations"]) for r in grpo] == [2, 2, 2]
    assert [r["reference"] for r in grpo] == [r["conversations"][2]["value"] for r in sft]
    assert sft[0]["video"] == "v.mp4" and sft[0]["id"] == critique.label_id


def test_a_balanced_export_repeats_rows_under_distinct_ids_and_imports_as_one_label_each():
    training_set = build_training_set(scores_skewed_to_four(), TrainingSetRecipe(balance="resample"))
    records = conversation_records(training_set.train, lambda r: f"{r.subject}", "sft")

    assert len({r["id"] for r in records}) == len(records)
    imported = import_conversations(jsonl(*records), "balanced.jsonl")
    assert len(imported.rows) == len({r.label_id for r in training_set.train})


def test_a_users_conversation_file_imports_and_its_bad_records_are_recorded():
    cookbook_style = {"conversations": json.dumps([
        {"role": "system", "content": "Rate the video."},
        {"role": "user", "content": [{"type": "video", "video": "data/videos/17.mp4"},
                                     {"type": "text", "text": "Rate the physical commonsense of this video from 1 to 5."}]},
        {"role": "assistant", "content": "<answer>\n3\n</answer>"}])}
    wts_style = {"id": "v1_0", "video": "scene/overhead_view/v1.mp4", "type": "environment", "conversations": [
        {"from": "human", "value": "<video> \n What is the weather? \n A: Clear \n B: Rain \n "
                                   "\nAnswer with the option's letter from the given choices directly."},
        {"from": "gpt", "value": "B"}]}
    data = jsonl(wts_style,
                 {"video": "x.mp4", "task": "critique", "conversations": [
                     {"from": "human", "value": "<video>\nRate it."}, {"from": "gpt", "value": "great"}]},
                 {"video": "x.mp4", "conversations": [{"from": "gpt", "value": "A"}]},
                 "{broken")
    imported = import_conversations(data, "user.jsonl")
    (critique,) = import_conversations(jsonl(cookbook_style), "videophy2_sft.jsonl", task="critique").rows

    assert (critique.task, critique.score, critique.subject) == ("critique", 3, "17.mp4")
    (vqa,) = imported.rows
    assert (vqa.task, vqa.question, vqa.choices, vqa.answer, vqa.question_type, vqa.subject) == (
        "vqa", "What is the weather?", ("Clear", "Rain"), "B", "environment", "v1.mp4")
    assert [(b.line, b.error_class) for b in imported.bad] == [(2, "BadAnswer"), (3, "MissingField"), (4, "BadJson")]


def test_critic_output_is_read_as_a_prediction_in_label_terms():
    critique, plausible, _, choice, free = mixed_rows()

    assert parse_prediction(critique, "<think>looks fine</think><answer>4</answer>") == 4
    assert parse_prediction(critique, "I would say 4") is None
    assert parse_prediction(plausible, "<answer>Yes</answer>") == "no"  # an anomaly: not plausible
    assert parse_prediction(choice, "<answer>right</answer>") == "C"
    assert parse_prediction(choice, "<answer>F</answer>") is None
    assert parse_prediction(free, "<answer>Stop</answer>") == "Stop"
