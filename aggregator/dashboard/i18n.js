// The dashboard's one message catalogue: every word the page shows, in Simplified Chinese
// (the default) and English. The page's static text names its key in a data-i18n attribute
// (data-i18n-placeholder, -title, -aria for those attributes); the script asks t(key, params).
// A key missing from a language falls back to the other and is logged, and a test checks
// both languages hold every key the page and the script use.
"use strict";

const MESSAGES = {
  "zh-CN": {
    "app.title": "卡口与路口运行平台",
    "nav.live": "实时告警",
    "nav.search": "事件查询",
    "nav.trajectory": "车辆轨迹",
    "nav.health": "设备状态",
    "nav.charts": "统计图表",
    "lang.switch": "English",
    "lang.switch_title": "切换到英文界面",
    "clock.zone": "{zone} {now}（{offset}）",
    "zone.Asia/Shanghai": "北京时间",
    "who.line": "{user}（{role}{county}）",
    "who.county": "，区县 {county}",
    "logout": "退出登录",

    "login.title": "登录",
    "login.user": "用户名",
    "login.password": "密码",
    "login.submit": "登录",
    "login.wrong": "用户名或密码错误",

    "live.title": "实时告警",
    "live.hint": "聚合服务器入库的行人闯红灯和号牌异常，最新的在最上面。",
    "live.connecting": "连接中",
    "live.live": "已连接",
    "live.reconnecting": "重新连接中",
    "live.lagged": "页面处理不及，漏掉 {n} 条告警，请到事件查询中查看",

    "col.time": "时间",
    "col.kind": "类型",
    "col.checkpoint": "卡口",
    "col.camera": "摄像机",
    "col.plate": "号牌",
    "col.detail": "详情",
    "col.review": "审核",
    "col.number": "序号",
    "col.lane": "车道",
    "col.direction": "方向",
    "col.leg_km": "路段公里",
    "col.leg_kmh": "路段时速",
    "col.state": "状态",
    "col.last_report": "最近上报",
    "col.fps": "帧率",
    "col.frames": "解码 / 丢弃帧",
    "col.providers": "模型运行于",
    "col.outbox": "待发送积压",

    "search.title": "事件查询",
    "search.kind": "类型",
    "search.plate": "号牌",
    "search.plate_placeholder": "苏E12345，苏E1*",
    "search.near": "允许一个字符之差",
    "search.checkpoint": "卡口",
    "search.anomaly": "异常",
    "search.review": "审核",
    "search.from": "起",
    "search.to": "止",
    "search.time_placeholder": "2026-11-29 08:00",
    "search.submit": "查询",
    "search.more": "更多",
    "search.count": "{n} 条事件",
    "search.count_more": "{n} 条事件，还有更多",
    "any": "全部",

    "event.title": "事件",
    "event.kind": "类型",
    "event.frame_time": "抓拍时间",
    "event.checkpoint": "卡口",
    "event.camera": "摄像机",
    "event.plate": "号牌",
    "event.detail": "详情",
    "event.review": "审核状态",
    "event.review_title": "审核",
    "event.reason": "理由",
    "event.reason_placeholder": "审核理由（必填）",
    "event.reason_needed": "请先填写审核理由",
    "event.confirm": "确认违法",
    "event.reject": "驳回",
    "event.recorded": "已记录：{state}",
    "event.audit": "审计记录",
    "event.audit_line": "{at}：{actor} {action}（{detail}）",
    "event.audit_none": "无",
    "event.trajectory": "查看该号牌的轨迹",
    "event.sha256": "SHA-256 {sha}",

    "trajectory.title": "车辆轨迹",
    "trajectory.plate": "号牌",
    "trajectory.show": "显示",
    "trajectory.map": "卡口地图",
    "trajectory.none": "没有 {plate} 的通行记录",
    "map.no_checkpoints": "没有带坐标的卡口",

    "health.title": "卡口与摄像机",
    "health.alive": "在线",
    "health.silent": "离线",
    "health.never": "从未上报",
    "health.outbox": "{items}（最早 {secs} 秒）",
    "health.camera": "{label}（{id}）",

    "charts.title": "统计图表",
    "charts.from": "起",
    "charts.to": "止",
    "charts.draw": "绘制",
    "charts.kinds": "各类事件每小时数量",
    "charts.kinds_aria": "每小时事件数",
    "charts.flow": "各卡口车流量（辆/小时）",
    "charts.flow_aria": "车流量",
    "charts.empty": "该时段内没有事件",

    "kind.vehicle_pass": "车辆通行",
    "kind.plate_anomaly": "号牌异常",
    "kind.pedestrian_red_light": "行人闯红灯",
    "kind.object_track": "目标轨迹",
    "kind.node_health": "节点状态",

    "anomaly.format_invalid": "号牌格式不符（疑似假牌）",
    "anomaly.not_registered": "未登记号牌",
    "anomaly.watch_list": "布控名单命中",
    "anomaly.class_mismatch": "号牌与登记不符（疑似套牌）",
    "anomaly.cloned_plate": "疑似套牌（异地同时出现）",
    "anomaly.night_coach": "客车凌晨 2-5 时违规运行",
    "anomaly.restricted_zone": "禁行区域或时段",

    "status.scrapped": "已报废",
    "status.wanted": "被盗抢/通缉",
    "status.licence_revoked": "牌证吊销",
    "status.inspection_overdue": "逾期未检验",
    "status.hit_and_run": "肇事逃逸",

    "review.pending": "待审核",
    "review.confirmed": "已确认",
    "review.rejected": "已驳回",
    "review.not_required": "无需审核",

    "role.county_operator": "区县值班员",
    "role.city_operator": "市级值班员",
    "role.reviewer": "审核员",
    "role.admin": "管理员",

    "colour.blue": "蓝牌",
    "colour.yellow": "黄牌",
    "colour.green": "绿牌",
    "colour.yellow_green": "黄绿牌",
    "colour.white": "白牌",
    "colour.black": "黑牌",

    "class.car": "小型车",
    "class.bus": "客车",
    "class.truck": "货车",
    "class.motorcycle": "摩托车",
    "class.person": "行人",
    "class.bicycle": "自行车",
    "class.unknown": "未知车型",

    "direction.inbound": "进城",
    "direction.outbound": "出城",
    "direction.northbound": "北向",
    "direction.southbound": "南向",
    "direction.eastbound": "东向",
    "direction.westbound": "西向",

    "action.review": "审核",
    "action.login": "登录",
    "action.login_failed": "登录失败",
    "action.unlock": "解锁",
    "action.plate_query": "号牌查询",
    "action.watchlist_put": "更新布控名单",

    "picture.stage1": "第一张：离开等候区",
    "picture.stage2": "第二张：进入人行横道",
    "picture.stage3": "第三张：继续通行",
    "picture.closeup": "人员特写",
    "picture.scene": "全景",
    "picture.vehicle": "车辆",
    "picture.plate": "号牌特写",

    "drop.behind": "处理不及",
    "drop.budget": "限帧",
    "drop.inference_error": "推理出错",
    "drop.stopped": "已停止",

    "detail.red_light": "红灯亮起 {secs} 秒后进入人行横道",
    "detail.lane": "{lane} 车道",
    "detail.track": "{class} 轨迹 {track}",
    "detail.cloned": "相距 {km} 公里，间隔 {min} 分钟，推算时速 {kmh} 公里",
    "detail.unsure": "号牌识别不确定",

    "error.forbidden": "无权执行此操作",
    "error.not_found": "未找到",
    "error.bad_request": "请求有误：请检查输入",
    "error.server": "服务器出错，请稍后重试",
    "error.network": "无法连接服务器",
    "error.time": "无法识别的时间：{value}（格式 2026-11-29 08:00）",
    "error.login_first": "请先登录",
  },
  en: {
    "app.title": "Checkpoint operations",
    "nav.live": "Live",
    "nav.search": "Search",
    "nav.trajectory": "Trajectory",
    "nav.health": "Health",
    "nav.charts": "Charts",
    "lang.switch": "中文",
    "lang.switch_title": "Switch to Chinese",
    "clock.zone": "{zone} {now} ({offset})",
    "zone.Asia/Shanghai": "Beijing time",
    "who.line": "{user} ({role}{county})",
    "who.county": ", county {county}",
    "logout": "Log out",

    "login.title": "Log in",
    "login.user": "User",
    "login.password": "Password",
    "login.submit": "Log in",
    "login.wrong": "wrong user or password",

    "live.title": "Live alerts",
    "live.hint": "Red-light violations and plate anomalies as the aggregator stores them, newest first.",
    "live.connecting": "connecting",
    "live.live": "live",
    "live.reconnecting": "reconnecting",
    "live.lagged": "{n} alerts missed while this page lagged behind; search to see them",

    "col.time": "Time",
    "col.kind": "Kind",
    "col.checkpoint": "Checkpoint",
    "col.camera": "Camera",
    "col.plate": "Plate",
    "col.detail": "Detail",
    "col.review": "Review",
    "col.number": "#",
    "col.lane": "Lane",
    "col.direction": "Direction",
    "col.leg_km": "Leg km",
    "col.leg_kmh": "Leg km/h",
    "col.state": "State",
    "col.last_report": "Last report",
    "col.fps": "FPS",
    "col.frames": "Frames decoded / dropped",
    "col.providers": "Models on",
    "col.outbox": "Outbox backlog",

    "search.title": "Search events",
    "search.kind": "Kind",
    "search.plate": "Plate",
    "search.plate_placeholder": "苏E12345, 苏E1*",
    "search.near": "within one edit",
    "search.checkpoint": "Checkpoint",
    "search.anomaly": "Anomaly",
    "search.review": "Review",
    "search.from": "From",
    "search.to": "To",
    "search.time_placeholder": "2026-11-29 08:00",
    "search.submit": "Search",
    "search.more": "More",
    "search.count": "{n} event(s)",
    "search.count_more": "{n} event(s), more available",
    "any": "any",

    "event.title": "Event",
    "event.kind": "Kind",
    "event.frame_time": "Frame time",
    "event.checkpoint": "Checkpoint",
    "event.camera": "Camera",
    "event.plate": "Plate",
    "event.detail": "Detail",
    "event.review": "Review",
    "event.review_title": "Review",
    "event.reason": "Reason",
    "event.reason_placeholder": "why (required)",
    "event.reason_needed": "type a reason first",
    "event.confirm": "Confirm violation",
    "event.reject": "Reject",
    "event.recorded": "Recorded: {state}",
    "event.audit": "Audit trail",
    "event.audit_line": "{at}: {actor} {action} ({detail})",
    "event.audit_none": "none",
    "event.trajectory": "Trajectory of this plate",
    "event.sha256": "sha256 {sha}",

    "trajectory.title": "Trajectory",
    "trajectory.plate": "Plate",
    "trajectory.show": "Show",
    "trajectory.map": "checkpoint map",
    "trajectory.none": "no passes of {plate}",
    "map.no_checkpoints": "no checkpoints with coordinates",

    "health.title": "Checkpoints and cameras",
    "health.alive": "alive",
    "health.silent": "silent",
    "health.never": "never",
    "health.outbox": "{items} (oldest {secs} s)",
    "health.camera": "{label} ({id})",

    "charts.title": "Charts",
    "charts.from": "From",
    "charts.to": "To",
    "charts.draw": "Draw",
    "charts.kinds": "Events per hour by kind",
    "charts.kinds_aria": "events per hour",
    "charts.flow": "Traffic flow per checkpoint (vehicles per hour)",
    "charts.flow_aria": "traffic flow",
    "charts.empty": "no events in this window",

    "kind.vehicle_pass": "vehicle pass",
    "kind.plate_anomaly": "plate anomaly",
    "kind.pedestrian_red_light": "pedestrian red light",
    "kind.object_track": "object track",
    "kind.node_health": "node health",

    "anomaly.format_invalid": "format invalid (suspected fake)",
    "anomaly.not_registered": "not registered",
    "anomaly.watch_list": "watch list",
    "anomaly.class_mismatch": "class mismatch (suspected clone)",
    "anomaly.cloned_plate": "cloned plate",
    "anomaly.night_coach": "coach 02:00-05:00",
    "anomaly.restricted_zone": "restricted zone or hour",

    "status.scrapped": "scrapped",
    "status.wanted": "wanted",
    "status.licence_revoked": "licence revoked",
    "status.inspection_overdue": "inspection overdue",
    "status.hit_and_run": "hit and run",

    "review.pending": "pending",
    "review.confirmed": "confirmed",
    "review.rejected": "rejected",
    "review.not_required": "not required",

    "role.county_operator": "county operator",
    "role.city_operator": "city operator",
    "role.reviewer": "reviewer",
    "role.admin": "admin",

    "colour.blue": "blue",
    "colour.yellow": "yellow",
    "colour.green": "green",
    "colour.yellow_green": "yellow-green",
    "colour.white": "white",
    "colour.black": "black",

    "class.car": "car",
    "class.bus": "bus",
    "class.truck": "truck",
    "class.motorcycle": "motorcycle",
    "class.person": "person",
    "class.bicycle": "bicycle",
    "class.unknown": "unknown",

    "direction.inbound": "inbound",
    "direction.outbound": "outbound",
    "direction.northbound": "northbound",
    "direction.southbound": "southbound",
    "direction.eastbound": "eastbound",
    "direction.westbound": "westbound",

    "action.review": "review",
    "action.login": "login",
    "action.login_failed": "login failed",
    "action.unlock": "unlock",
    "action.plate_query": "plate query",
    "action.watchlist_put": "watch list put in force",

    "picture.stage1": "1: leaving the kerb",
    "picture.stage2": "2: on the crosswalk",
    "picture.stage3": "3: further on",
    "picture.closeup": "close-up",
    "picture.scene": "scene",
    "picture.vehicle": "vehicle",
    "picture.plate": "plate",

    "drop.behind": "behind",
    "drop.budget": "budget",
    "drop.inference_error": "inference error",
    "drop.stopped": "stopped",

    "detail.red_light": "entered the crosswalk {secs} s into red",
    "detail.lane": "lane {lane}",
    "detail.track": "{class} track {track}",
    "detail.cloned": "{km} km apart, {min} min between, {kmh} km/h implied",
    "detail.unsure": "plate read unsure",

    "error.forbidden": "not allowed for this user",
    "error.not_found": "not found",
    "error.bad_request": "bad request: check the input",
    "error.server": "server error, try again later",
    "error.network": "cannot reach the server",
    "error.time": "unknown time: {value} (format 2026-11-29 08:00)",
    "error.login_first": "log in first",
  },
};

const LANGS = Object.keys(MESSAGES);
let lang = "zh-CN";

function setLang(l) {
  lang = LANGS.includes(l) ? l : "zh-CN";
  document.documentElement.lang = lang;
  document.title = t("app.title");
}

// The message `key` in the current language with {name} replaced from `params`.
function t(key, params) {
  let s = MESSAGES[lang][key];
  if (s == null) {
    console.warn(`no ${lang} message for ${key}`);
    s = MESSAGES["zh-CN"][key] ?? MESSAGES.en[key] ?? key;
  }
  return params ? s.replace(/\{(\w+)\}/g, (m, n) => (params[n] != null ? String(params[n]) : m)) : s;
}

// The name of a code value (`kind`, `anomaly`, `review`, ...) in the current language; the
// value itself where the catalogue has no name for it (data, not a word of ours).
function name(group, value) {
  if (value == null || value === "") return "";
  const key = `${group}.${value}`;
  return MESSAGES[lang][key] != null ? MESSAGES[lang][key] : String(value);
}

// Fills every element under `root` that names a message.
function applyI18n(root) {
  for (const e of root.querySelectorAll("[data-i18n]")) e.textContent = t(e.dataset.i18n);
  for (const e of root.querySelectorAll("[data-i18n-placeholder]")) e.placeholder = t(e.dataset.i18nPlaceholder);
  for (const e of root.querySelectorAll("[data-i18n-title]")) e.title = t(e.dataset.i18nTitle);
  for (const e of root.querySelectorAll("[data-i18n-aria]")) e.setAttribute("aria-label", t(e.dataset.i18nAria));
}
