use super::*;
use crate::api::{
    AnalysisSpec, GatewayApiRouting, MetricSpec, PauseStep, PrometheusSpec, TrafficRouting,
    VersionRef,
};

fn spec() -> RolloutSpec {
    RolloutSpec {
        stable: VersionRef {
            service: "checkout-v1".into(),
            deployment: Some("checkout-v1".into()),
            ..Default::default()
        },
        canary: VersionRef {
            service: "checkout-v2".into(),
            deployment: Some("checkout-v2".into()),
            ..Default::default()
        },
        traffic_routing: TrafficRouting {
            gateway_api: Some(GatewayApiRouting {
                http_route: "checkout".into(),
            }),
            ..Default::default()
        },
        steps: None,
        analysis: Some(AnalysisSpec {
            interval: Some("30s".into()),
            prometheus: Some(PrometheusSpec {
                address: "http://prometheus:9090".into(),
            }),
            metrics: vec![MetricSpec {
                name: "error-rate".into(),
                query: "q".into(),
                max: Some(0.01),
                min: None,
                failure_limit: Some(2),
                ..Default::default()
            }],
            consecutive_error_limit: None,
            ..Default::default()
        }),
        paused: false,
        pause_deadline: None,
        notifications: None,
        checks: vec![],
        depends_on: None,
        blue_green: None,
    }
}

fn fields(spec: &RolloutSpec) -> Vec<String> {
    validate(spec)
        .unwrap_err()
        .into_iter()
        .map(|e| e.field)
        .collect()
}

/// A counted metric: requests and failures with max.
fn counted(name: &str, max: f64) -> MetricSpec {
    MetricSpec {
        name: name.into(),
        requests: Some("sum(increase(r{service=\"{{service}}\"}[{{window}}]))".into()),
        failures: Some("sum(increase(f{service=\"{{service}}\"}[{{window}}]))".into()),
        max: Some(max),
        ..Default::default()
    }
}

#[test]
fn a_counted_metric_is_judged_by_evidence_against_its_fixed_limit() {
    let mut s = spec();
    let a = s.analysis.as_mut().unwrap();
    a.interval = None;
    a.metrics = vec![counted("error-rate", 0.01)];
    let plan = validate(&s).unwrap();
    assert!(plan.metrics.is_empty());
    assert_eq!(plan.compare.len(), 1);
    let c = &plan.compare[0];
    assert_eq!(c.name, "error-rate");
    assert_eq!(
        c.tolerance,
        crate::analysis::sequential::Tolerance::limit(0.01)
    );
    assert!(c.requests.contains("{{window}}"));
    // Looked at like a comparison: every 5s.
    assert_eq!(plan.interval, Duration::from_secs(5));
    // Beside a plain threshold metric: the threshold's 30s.
    s.analysis
        .as_mut()
        .unwrap()
        .metrics
        .push(spec().analysis.unwrap().metrics[0].clone());
    s.analysis.as_mut().unwrap().metrics[1].name = "latency".into();
    let plan = validate(&s).unwrap();
    assert_eq!((plan.metrics.len(), plan.compare.len()), (1, 1));
    assert_eq!(plan.interval, Duration::from_secs(30));
}

#[test]
fn a_counted_metric_with_a_bad_shape_names_the_field() {
    for (change, field) in [
        (
            (|m: &mut MetricSpec| m.max = None) as fn(&mut MetricSpec),
            "spec.analysis.metrics[0].max",
        ),
        (|m| m.max = Some(1.5), "spec.analysis.metrics[0].max"),
        (|m| m.min = Some(0.0), "spec.analysis.metrics[0].min"),
        (
            |m| m.failure_limit = Some(1),
            "spec.analysis.metrics[0].failureLimit",
        ),
        (|m| m.query = "up".into(), "spec.analysis.metrics[0].query"),
        (|m| m.failures = None, "spec.analysis.metrics[0]"),
        (
            |m| m.requests = Some(" ".into()),
            "spec.analysis.metrics[0].requests",
        ),
    ] {
        let mut s = spec();
        let mut m = counted("error-rate", 0.01);
        change(&mut m);
        s.analysis.as_mut().unwrap().metrics = vec![m];
        assert_eq!(fields(&s), vec![field.to_string()], "{field}");
    }
    // The same name as a compare entry: their status would collide.
    let mut s = spec();
    let a = s.analysis.as_mut().unwrap();
    a.metrics = vec![counted("errors", 0.01)];
    a.compare = vec![crate::api::CompareSpec {
        name: "errors".into(),
        requests: "r{{service}}".into(),
        failures: "f{{service}}".into(),
        tolerance: None,
    }];
    assert_eq!(
        fields(&s),
        vec!["spec.analysis.metrics[0].name".to_string()]
    );
}

#[test]
fn default_plan_is_5_33_50_100_with_pauses() {
    let plan = validate(&spec()).unwrap();
    let weights: Vec<u8> = (0..plan.steps.len())
        .map(|i| plan.target_weight(i))
        .collect();
    assert_eq!(weights, vec![5, 5, 33, 33, 50, 50, 100, 100]);
    assert_eq!(plan.interval, Duration::from_secs(30));
    assert_eq!(plan.consecutive_error_limit, 4);
    assert_eq!(plan.metrics[0].failure_limit, 2);
    assert_eq!(plan.canary_ref, "checkout-v2/checkout-v2");
}

#[test]
fn an_analysis_that_only_compares_looks_every_5s_and_tolerates_2_minutes_of_errors() {
    let mut s = spec();
    let a = s.analysis.as_mut().unwrap();
    a.interval = None;
    a.metrics.clear();
    a.compare = vec![crate::api::CompareSpec {
        name: "http-errors".into(),
        requests: "r{{service}}".into(),
        failures: "f{{service}}".into(),
        tolerance: None,
    }];
    let plan = validate(&s).unwrap();
    assert_eq!(plan.interval, Duration::from_secs(5));
    assert_eq!(plan.consecutive_error_limit, 24);
    // With a threshold metric too, each look counts against its
    // failureLimit: 30s.
    let a = s.analysis.as_mut().unwrap();
    a.metrics = spec().analysis.unwrap().metrics;
    let plan = validate(&s).unwrap();
    assert_eq!(plan.interval, Duration::from_secs(30));
    assert_eq!(plan.consecutive_error_limit, 4);
    // An explicit interval and limit win.
    let a = s.analysis.as_mut().unwrap();
    a.interval = Some("45s".into());
    let plan = validate(&s).unwrap();
    assert_eq!(plan.consecutive_error_limit, 3);
    s.analysis.as_mut().unwrap().consecutive_error_limit = Some(7);
    assert_eq!(validate(&s).unwrap().consecutive_error_limit, 7);
}

#[test]
fn decreasing_weight_is_rejected_naming_the_step() {
    let mut s = spec();
    s.steps = Some(vec![
        Step {
            set_header_route: None,
            set_weight: Some(50),
            pause: None,
        },
        Step {
            set_header_route: None,
            set_weight: Some(20),
            pause: None,
        },
    ]);
    assert_eq!(fields(&s), vec!["spec.steps[1].setWeight"]);
}

#[test]
fn bad_duration_and_out_of_range_weight_are_named() {
    let mut s = spec();
    s.steps = Some(vec![
        Step {
            set_header_route: None,
            set_weight: Some(150),
            pause: None,
        },
        Step {
            set_header_route: None,
            set_weight: None,
            pause: Some(PauseStep {
                duration: Some("2 minutes".into()),
            }),
        },
        Step {
            set_header_route: None,
            set_weight: Some(10),
            pause: Some(PauseStep::default()),
        },
    ]);
    assert_eq!(
        fields(&s),
        vec![
            "spec.steps[0].setWeight",
            "spec.steps[1].pause.duration",
            "spec.steps[2]"
        ]
    );
}

#[test]
fn pause_deadline_is_parsed_or_named() {
    let mut s = spec();
    assert_eq!(validate(&s).unwrap().pause_deadline, None);
    s.pause_deadline = Some("1h30m".into());
    assert_eq!(
        validate(&s).unwrap().pause_deadline,
        Some(Duration::from_secs(5400))
    );
    s.pause_deadline = Some("an hour".into());
    assert_eq!(fields(&s), vec!["spec.pauseDeadline"]);
}

#[test]
fn same_service_for_both_versions_is_rejected() {
    let mut s = spec();
    s.canary.service = "checkout-v1".into();
    assert_eq!(fields(&s), vec!["spec.canary.service"]);
}

#[test]
fn metric_without_bound_and_missing_router_are_rejected() {
    let mut s = spec();
    s.analysis.as_mut().unwrap().metrics[0].max = None;
    s.traffic_routing.gateway_api = None;
    assert_eq!(
        fields(&s),
        vec!["spec.trafficRouting", "spec.analysis.metrics[0]"]
    );
}

#[test]
fn durations_parse_like_go() {
    assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
    assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
    assert!(parse_duration("5").is_err());
    assert!(parse_duration("-5s").is_err());
    assert!(parse_duration("").is_err());
}

#[test]
fn manual_pause_and_explicit_steps_build_the_plan() {
    let mut s = spec();
    s.steps = Some(vec![
        Step {
            set_header_route: None,
            set_weight: Some(5),
            pause: None,
        },
        Step {
            set_header_route: None,
            set_weight: None,
            pause: Some(PauseStep {
                duration: Some("2m".into()),
            }),
        },
        Step {
            set_header_route: None,
            set_weight: None,
            pause: Some(PauseStep::default()),
        },
        Step {
            set_header_route: None,
            set_weight: Some(100),
            pause: None,
        },
    ]);
    let plan = validate(&s).unwrap();
    assert_eq!(
        plan.steps,
        vec![
            PlanStep::SetWeight(5),
            PlanStep::Pause(Some(Duration::from_secs(120))),
            PlanStep::Pause(None),
            PlanStep::SetWeight(100)
        ]
    );
    assert_eq!(plan.target_weight(2), 5);
}

#[test]
fn checks_are_validated_with_their_field() {
    use crate::api::{CheckPoint, CheckSpec, JobCheck, SecretKeyRef, WebhookCheck};
    let webhook = |url: Option<&str>, from: bool, ty: Option<&str>| WebhookCheck {
        url: url.map(Into::into),
        url_from: from.then(|| SecretKeyRef {
            name: "s".into(),
            key: "k".into(),
        }),
        type_: ty.map(Into::into),
        ..Default::default()
    };
    let mut s = spec();
    s.checks = vec![
        CheckSpec {
            name: "ok".into(),
            at: vec![CheckPoint::PreRollout],
            webhook: Some(webhook(Some("http://x/"), false, None)),
            ..Default::default()
        },
        CheckSpec {
            name: "job".into(),
            at: vec![CheckPoint::Step],
            interval: Some("5s".into()),
            job: Some(JobCheck {
                metadata: None,
                spec: serde_json::json!({"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "t", "image": "busybox"}]}}}),
            }),
            ..Default::default()
        },
    ];
    let plan = validate(&s).unwrap();
    assert_eq!(plan.checks.len(), 2);
    assert_eq!(plan.checks[1].interval, std::time::Duration::from_secs(5));
    let table: Vec<(CheckSpec, &str)> = vec![
        (
            CheckSpec {
                name: "a".into(),
                at: vec![CheckPoint::Step],
                ..Default::default()
            },
            "spec.checks[0]",
        ),
        (
            CheckSpec {
                name: "a".into(),
                at: vec![CheckPoint::Step],
                webhook: Some(webhook(None, false, None)),
                ..Default::default()
            },
            "spec.checks[0].webhook",
        ),
        (
            CheckSpec {
                name: "a".into(),
                at: vec![CheckPoint::Step],
                webhook: Some(webhook(Some("http://x"), true, None)),
                ..Default::default()
            },
            "spec.checks[0].webhook",
        ),
        (
            CheckSpec {
                name: "a".into(),
                at: vec![CheckPoint::Step],
                webhook: Some(webhook(Some("ftp://x"), false, None)),
                ..Default::default()
            },
            "spec.checks[0].webhook.url",
        ),
        (
            CheckSpec {
                name: "a".into(),
                at: vec![CheckPoint::PostRollback],
                webhook: Some(webhook(Some("http://x"), false, Some("confirm"))),
                ..Default::default()
            },
            "spec.checks[0].at",
        ),
        (
            CheckSpec {
                name: "a".into(),
                at: vec![],
                webhook: Some(webhook(Some("http://x"), false, None)),
                ..Default::default()
            },
            "spec.checks[0].at",
        ),
        (
            CheckSpec {
                name: "A_b".into(),
                at: vec![CheckPoint::Step],
                webhook: Some(webhook(Some("http://x"), false, None)),
                ..Default::default()
            },
            "spec.checks[0].name",
        ),
        (
            CheckSpec {
                name: "a".into(),
                at: vec![CheckPoint::Step],
                interval: Some("soon".into()),
                webhook: Some(webhook(Some("http://x"), false, None)),
                ..Default::default()
            },
            "spec.checks[0].interval",
        ),
        (
            CheckSpec {
                name: "a".into(),
                at: vec![CheckPoint::Step],
                job: Some(JobCheck {
                    metadata: None,
                    spec: serde_json::json!({"template": {"spec": {"containers": []}}}),
                }),
                ..Default::default()
            },
            "spec.checks[0].job.spec",
        ),
        (
            CheckSpec {
                name: "a".into(),
                at: vec![CheckPoint::Step],
                job: Some(JobCheck {
                    metadata: None,
                    spec: serde_json::json!({"template": {"spec": {"containers": [{"name": "t"}]}}}),
                }),
                ..Default::default()
            },
            "spec.checks[0].job.spec",
        ),
    ];
    for (c, field) in table {
        let mut s = spec();
        s.checks = vec![c.clone()];
        assert_eq!(fields(&s), vec![field.to_string()], "{c:?}");
    }
    let mut s = spec();
    let c = CheckSpec {
        name: "a".into(),
        at: vec![CheckPoint::Step],
        webhook: Some(webhook(Some("http://x"), false, None)),
        ..Default::default()
    };
    s.checks = vec![c.clone(), c];
    assert_eq!(fields(&s), vec!["spec.checks[1].name".to_string()]);
}

#[test]
fn a_rollback_needs_95_percent_confidence_unless_set_or_confidence_is_lower() {
    let mut s = spec();
    let plan = validate(&s).unwrap();
    assert_eq!((plan.confidence, plan.rollback_confidence), (0.99, 0.95));
    // A lower confidence lowers both: a rollback never needs more than a
    // promotion.
    s.analysis.as_mut().unwrap().confidence = Some(0.9);
    let plan = validate(&s).unwrap();
    assert_eq!((plan.confidence, plan.rollback_confidence), (0.9, 0.9));
    // Set, it is used as it is (0.99: the bar of both before it existed).
    let a = s.analysis.as_mut().unwrap();
    a.confidence = None;
    a.rollback_confidence = Some(0.99);
    assert_eq!(validate(&s).unwrap().rollback_confidence, 0.99);
    s.analysis.as_mut().unwrap().rollback_confidence = Some(1.0);
    assert_eq!(fields(&s), vec!["spec.analysis.rollbackConfidence"]);
}
