//! Item 6: a base image's `ONBUILD` triggers run first in the stage built
//! on it, in order, each with its own progress line; the child image
//! does not carry them on.

use crate::support::{Project, busybox, push_built, registry};

#[tokio::test]
async fn a_base_images_onbuild_triggers_run_in_order_before_the_childs_steps() {
    let base = busybox().await;
    let tag = format!("{}/imgsrc-onbuild:1", registry());
    push_built(&format!("FROM {base}\nONBUILD RUN echo first >> /order\nONBUILD RUN echo second >> /order\n"), &tag);

    let p = Project::new();
    let (built, img) = p.build_oci(&format!("FROM {tag}\nRUN echo child >> /order\n"), &[]);
    assert_eq!(img.file("order").as_deref(), Some("first\nsecond\nchild\n"));
    let lines: Vec<&str> = built.progress.lines().filter(|l| l.contains("ONBUILD RUN echo")).collect();
    let first = built.progress.find("ONBUILD RUN echo first").unwrap_or_else(|| panic!("{}", built.progress));
    let second = built.progress.find("ONBUILD RUN echo second").unwrap_or_else(|| panic!("{}", built.progress));
    assert!(first < second, "{lines:?}");
    assert!(img.config()["config"]["OnBuild"].is_null(), "the triggers are spent: {}", img.config());
}

#[tokio::test]
async fn the_base_image_with_triggers_keeps_them_in_its_config() {
    let base = busybox().await;
    let p = Project::new();
    let (_, img) = p.build_oci(&format!("FROM {base}\nONBUILD RUN echo later\n"), &[]);
    assert_eq!(img.config()["config"]["OnBuild"], serde_json::json!(["RUN echo later"]));
}
